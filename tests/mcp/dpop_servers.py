"""Fixtures for the ``test_mcp_dpop*`` modules, imported there (the other MCP tests in this
directory are untouched). A guarded MCP SDK server on a loopback socket: ``AgentGuardMCP`` (as it
is) in front of the SDK's streamable HTTP app, agentguard's token endpoint at ``/oauth`` and its
RFC 8414 document at ``/.well-known/oauth-authorization-server`` beside it, DPoP required, on a
shared fake clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from agentguard import Guard, IssuedKeys
from agentguard.asgi import OAuthApp
from agentguard.asgi._metadata import AuthorizationServerMetadata, ProtectedResourceMetadata
from agentguard.asgi._types import Message, Receive, Scope, Send
from agentguard.client import AgentAuth, AgentCredentials
from agentguard.dpop import DPoPKey, DPoPPolicy
from agentguard.integrations.mcp import AgentGuardMCP
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from examples import mcp_server
from tests.support.servers import LoopbackServer, bound_socket

ACCESS_TTL = 600.0
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "conformance", "version": "1"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
BODY = json.dumps(INITIALIZE).encode()


@dataclass
class GuardedMCP:
    """The running server and what a test needs to call it."""

    origin: str
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    token_calls: int = 0
    resource_statuses: list[int] = field(default_factory=list)

    @property
    def resource(self) -> str:
        return self.origin + "/mcp"

    @property
    def token_url(self) -> str:
        return self.origin + "/oauth/token"

    async def issue(
        self,
        dpop_key: DPoPKey | None = None,
        *,
        jkt: str | None = None,
        user: str = "writer",
        audience: str | None = None,
    ) -> IssuedKeys:
        if await self.store.get_user(user) is None:
            await make_user(self.store, user_id=user, grants="notes:write")
        if dpop_key is not None:
            jkt = dpop_key.thumbprint
        return await self.guard.issuer.issue(user, "ws-1", jkt=jkt, audience=audience)

    def credentials(self, keys: IssuedKeys, dpop_key: DPoPKey | None) -> AgentCredentials:
        return AgentCredentials(
            access_key=keys.access_key,
            refresh_key=keys.refresh_key,
            issued_at=keys.access.created_at,
            expires_at=keys.access.expires_at,
            token_url=self.token_url,
            token_type="DPoP" if dpop_key is not None else "Bearer",
            dpop_key=dpop_key,
        )

    def auth(self, keys: IssuedKeys, dpop_key: DPoPKey | None) -> AgentAuth:
        return AgentAuth(self.credentials(keys, dpop_key), clock=self.clock)


def guarded_app(guard: Guard, resource: str, *, stateless: bool) -> AgentGuardMCP:
    """``examples/mcp_server.py``'s app, with the SDK's sessions on (default) or off."""
    metadata = ProtectedResourceMetadata.from_guard(
        guard,
        resource=resource,
        authorization_servers=[resource.rsplit("/", 1)[0]],
        scopes_supported=["notes:read", "notes:write"],
    )
    sdk_app = mcp_server.build_server(guard, resource).streamable_http_app(stateless_http=stateless)
    return AgentGuardMCP(sdk_app, guard, metadata=metadata)


def serve(
    *, required: bool = True, nonces: bool = False, stateless: bool = False
) -> tuple[LoopbackServer, GuardedMCP]:
    """The server (not yet started) and its state."""
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    clock = FakeClock(datetime.now(timezone.utc))  # the SDK checks expiry on the real clock
    store = MemoryStore(clock=clock)
    policy = DPoPPolicy(
        public_origin=origin,
        required=required,
        nonce_secret=b"r" * 32 if nonces else None,
        token_nonce_secret=b"t" * 32 if nonces else None,
    )
    guard = Guard(store, clock=clock, dpop=policy, access_ttl=timedelta(seconds=ACCESS_TTL))
    state = GuardedMCP(origin, clock, store, guard)
    guarded = guarded_app(guard, origin + "/mcp", stateless=stateless)
    oauth = OAuthApp(guard)
    server_metadata = AuthorizationServerMetadata.from_guard(guard, issuer=origin)
    metadata_app = server_metadata.app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/oauth/"):
            state.token_calls += path == "/oauth/token"
            await oauth({**scope, "root_path": "/oauth"}, receive, send)
            return
        if scope["type"] == "http" and path == server_metadata.well_known_path:
            await metadata_app(scope, receive, send)
            return

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                state.resource_statuses.append(message["status"])
            await send(message)

        await guarded(scope, receive, recording if scope["type"] == "http" else send)

    return LoopbackServer(app, lifespan="on", sock=sock), state


@pytest.fixture(scope="module", name="quiet_loggers")
def quiet_loggers_fixture() -> Iterator[None]:
    """The SDK and the HTTP stacks log every request at DEBUG; capturing that costs more than
    the requests themselves."""
    names = ("mcp", "httpx", "httpcore", "httpx2", "httpcore2", "sse_starlette", "uvicorn")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module", name="mcp")
def mcp_fixture() -> Iterator[GuardedMCP]:
    """One guarded MCP server per module (DPoP required, no nonces, SDK sessions on)."""
    server, state = serve()
    with server:
        yield state


@pytest.fixture(scope="module", name="optional_mcp")
def optional_mcp_fixture() -> Iterator[GuardedMCP]:
    """The same with DPoP optional: bearer keys are accepted, bound keys still need proofs."""
    server, state = serve(required=False)
    with server:
        yield state


@pytest.fixture(scope="module", name="stateless_mcp")
def stateless_mcp_fixture() -> Iterator[GuardedMCP]:
    """The same with the SDK's sessions off (``stateless_http=True``)."""
    server, state = serve(stateless=True)
    with server:
        yield state
