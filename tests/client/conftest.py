"""A guarded app with DPoP and the OAuth endpoints on a fake clock, and helpers for the runtime."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard import Guard, IssuedKeys, RouteRule, User
from agentguard.asgi._types import Message, Receive, Scope, Send
from agentguard.client import AgentAuth, AgentCredentials, CredentialsFile
from agentguard.dpop import DPoPKey, DPoPPolicy
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.asgi.conftest import build_app
from tests.support.servers import LoopbackServer, free_port

ORIGIN = "http://testserver"
TOKEN_URL = ORIGIN + "/oauth/token"
LIFETIME = 3600.0


@dataclass
class Recorder:
    """ASGI wrapper that counts token-endpoint calls and records resource statuses."""

    app: object
    token_calls: int = 0
    statuses: list[int] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_token = scope["type"] == "http" and scope["path"].endswith("/oauth/token")
        if is_token:
            self.token_calls += 1

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start" and not is_token:
                self.statuses.append(message["status"])
            await send(message)

        await self.app(scope, receive, recording)  # type: ignore[operator]


@dataclass
class Runtime:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    user: User
    dpop_key: DPoPKey | None
    keys: IssuedKeys
    recorder: Recorder
    transport: httpx.ASGITransport

    def credentials(self, token_url: str = TOKEN_URL) -> AgentCredentials:
        return credentials_for(self.keys, self.dpop_key, token_url)

    def auth(self, **options: Any) -> AgentAuth:
        options.setdefault("async_token_transport", self.transport)
        return AgentAuth(self.credentials(), clock=self.clock, **options)

    def client(self, auth: AgentAuth) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, base_url=ORIGIN, auth=auth)

    async def disable_user(self) -> None:
        await self.store.put_user(self.user.model_copy(update={"enabled": False}))


def credentials_for(
    keys: IssuedKeys, dpop_key: DPoPKey | None, token_url: str, resource_url: str | None = None
) -> AgentCredentials:
    return AgentCredentials(
        access_key=keys.access_key,
        refresh_key=keys.refresh_key,
        issued_at=keys.access.created_at,
        expires_at=keys.access.expires_at,
        token_url=token_url,
        token_type="DPoP" if keys.access.jkt is not None else "Bearer",
        dpop_key=dpop_key,
        resource_url=resource_url,
    )


async def make_runtime(
    *, policy: DPoPPolicy | None = None, bound: bool = True, grants: str = "crm:write"
) -> Runtime:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(
        store,
        rules=[RouteRule("/crm", service="crm")],
        clock=clock,
        dpop=policy or DPoPPolicy(public_origin=ORIGIN),
    )
    user = await make_user(store, grants=grants)
    dpop_key = DPoPKey.generate() if bound else None
    keys = await guard.issuer.issue(
        user.id, "ws-1", jkt=dpop_key.thumbprint if dpop_key is not None else None
    )
    recorder = Recorder(build_app(guard))
    transport = httpx.ASGITransport(app=recorder)
    return Runtime(clock, store, guard, user, dpop_key, keys, recorder, transport)


@pytest.fixture
async def runtime() -> Runtime:
    return await make_runtime()


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "agent"
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    return directory


def write_file(directory: Path, credentials: AgentCredentials) -> CredentialsFile:
    file = CredentialsFile(directory / "credentials.json")
    file.create(credentials)
    return file


class Server(LoopbackServer):
    """The guarded app with DPoP required, served by uvicorn on a loopback socket."""

    def __init__(self, *, nonces: bool = False) -> None:
        port = free_port()
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        policy = DPoPPolicy(
            public_origin=f"http://127.0.0.1:{port}",
            required=True,
            nonce_secret=b"r" * 32 if nonces else None,
            token_nonce_secret=b"t" * 32 if nonces else None,
        )
        self.guard = Guard(
            self.store, rules=[RouteRule("/crm", service="crm")], clock=self.clock, dpop=policy
        )
        self.recorder = Recorder(build_app(self.guard))
        super().__init__(self.recorder, port=port)

    def __enter__(self) -> Server:
        super().__enter__()
        return self


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as running:
        yield running
