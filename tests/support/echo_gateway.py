"""A gateway on a loopback socket in front of a vendor whose every answer the test scripts.

Two services, both on the scripted vendor:

- ``crm``: the user's own key (:data:`CRM_KEY`) in ``X-Api-Key``;
- ``projects``: only an account admin key (:data:`ADMIN_KEY`); the gateway mints a per-user
  token for each call (RFC 8693, against :class:`~agentguard.testing.FakeTokenExchange`, also
  on a socket) and sends that.

The vendor's script gets the request headers it received (so it can echo the credential it was
sent) and answers ``(status, raw headers, body chunks)``: headers exactly as given, so a test
can claim any ``Content-Encoding``; chunks sent one by one, so a large body streams.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import CredentialOwner, CredentialScope, Guard, IssuedKeys, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import (
    CredentialSwapper,
    CredentialVault,
    EchoScanner,
    KeyRing,
    TokenExchangeMinter,
)
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeTokenExchange, make_user
from tests.support.servers import LoopbackServer

CRM_KEY = "crm-echo-" + secrets.token_urlsafe(24)
ADMIN_KEY = "projects-admin-" + secrets.token_urlsafe(24)

Answer = tuple[int, list[tuple[bytes, bytes]], list[bytes]]
Script = Callable[[dict[str, str]], Answer]


def json_answer(body: bytes, *headers: tuple[bytes, bytes]) -> Answer:
    """A 200 with a JSON content type (unless ``headers`` give one) and ``body`` in one chunk."""
    given = list(headers)
    if not any(name.lower() == b"content-type" for name, _ in given):
        given.append((b"content-type", b"application/json"))
    return 200, given, [body]


@dataclass
class ScriptedVendor:
    """An ASGI vendor that answers what ``script`` says and records the headers it received."""

    script: Script = lambda headers: json_answer(b'{"ok": true}')
    seen: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if not message.get("more_body", False):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append(headers)
        status, raw_headers, chunks = self.script(headers)
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        for chunk in chunks[:-1]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": chunks[-1] if chunks else b""})


@dataclass
class EchoGateway:
    url: str
    keys: IssuedKeys
    store: MemoryStore
    vendor: ScriptedVendor
    exchange: FakeTokenExchange
    swapper: CredentialSwapper

    @property
    def placeholder(self) -> str:
        return self.keys.access_key.reveal()

    async def call(self, service: str, path: str = "/x") -> httpx.Response:
        """What the agent gets for ``GET /<service><path>``, read whole."""
        headers = (
            {"X-Api-Key": self.placeholder}
            if service == "crm"
            else {"Authorization": f"Bearer {self.placeholder}"}
        )
        async with httpx.AsyncClient(timeout=15) as client:
            return await client.get(f"{self.url}/{service}{path}", headers=headers)

    async def stream(self, service: str, path: str = "/x") -> tuple[int | None, bytes, bool]:
        """``(status, bytes received, whether the stream was cut)`` for a streamed call."""
        headers = (
            {"X-Api-Key": self.placeholder}
            if service == "crm"
            else {"Authorization": f"Bearer {self.placeholder}"}
        )
        received = bytearray()
        status = None
        try:
            async with (
                httpx.AsyncClient(timeout=15) as client,
                client.stream("GET", f"{self.url}/{service}{path}", headers=headers) as response,
            ):
                status = response.status_code
                async for piece in response.aiter_raw():
                    received.extend(piece)
        except httpx.HTTPError:
            return status, bytes(received), True
        return status, bytes(received), False

    async def reasons(self) -> list[str]:
        return [str(e.event().get("reason")) for e in await self.store.read()]

    def minted(self) -> list[str]:
        """Every token the fake token endpoint minted so far."""
        return [
            f"minted-{call['subject_token']}-{n}" for n, call in enumerate(self.exchange.calls, 1)
        ]


def revealed(response: httpx.Response, *secrets: str) -> bool:
    """Whether anything the agent received (header names, values, body) reveals a secret."""
    scanner = EchoScanner(secrets)
    for name, value in response.headers.raw:
        if scanner.found_in(name) or scanner.found_in(value):
            return True
    return scanner.found_in(response.content)


@contextlib.asynccontextmanager
async def echo_gateway(
    script: Script | None = None, *, vendor_url: str | None = None, **proxy_options: Any
) -> AsyncIterator[EchoGateway]:
    """Serve the scripted vendor (or use the one at ``vendor_url``), the token endpoint and the
    gateway on loopback."""
    vendor = ScriptedVendor() if script is None else ScriptedVendor(script)
    exchange = FakeTokenExchange(admin_key=ADMIN_KEY)
    with contextlib.ExitStack() as servers:
        if vendor_url is None:
            vendor_url = servers.enter_context(LoopbackServer(vendor)).url
        token = servers.enter_context(LoopbackServer(exchange))
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        vault = CredentialVault(store, KeyRing.generate(), clock=clock)
        services = [
            ServiceConfig(
                name="crm",
                base_url=vendor_url + "/crm",
                placement=Placement.HEADER,
                parameter="X-Api-Key",
                allow_insecure_http=True,
            ),
            ServiceConfig(
                name="projects", base_url=vendor_url + "/projects", allow_insecure_http=True
            ),
        ]
        minter = TokenExchangeMinter(token.url + "/token", allow_insecure_http=True, clock=clock)
        swapper = CredentialSwapper(vault, minters={"projects": minter}, clock=clock)
        guard = Guard(store, clock=clock, services=services, swapper=swapper)
        swapper.audit = guard.audit
        user = await make_user(store, grants="crm:write projects:write")
        keys = await guard.issuer.issue(user.id, "ws-1")
        await vault.put("crm", CredentialOwner.USER, user.id, CRM_KEY, scope=CredentialScope.USER)
        await vault.put(
            "projects", CredentialOwner.ACCOUNT, "acct-1", ADMIN_KEY, scope=CredentialScope.ADMIN
        )
        apps = [ProxyApp(guard, name, **proxy_options) for name in ("crm", "projects")]

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            yield
            for proxy in apps:  # the pooled clients belong to the server's loop
                await proxy.aclose()
            await minter.aclose()

        app = Starlette(
            routes=[Mount(f"/{proxy.service.name}", app=proxy) for proxy in apps],
            lifespan=lifespan,
        )
        with LoopbackServer(app, lifespan="on") as server:
            yield EchoGateway(server.url, keys, store, vendor, exchange, swapper)
