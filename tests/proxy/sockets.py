"""A guarded gateway served by uvicorn on loopback, with two users, in front of one fake vendor.

``user-1`` (``keys[0]``) and ``user-2`` (``keys[1]``) both hold ``crm:write``; ``reader``
(``keys[2]``) holds ``crm:read`` only. The CRM service's options come from the test, so slow-body
and key-scan tests can use small deadlines and a small pool.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import CredentialOwner, CredentialScope, Guard, IssuedKeys, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeUpstream, make_user
from tests.support.servers import LoopbackServer

CRM_KEY = "crm-socket-" + secrets.token_urlsafe(16)


@dataclass
class SocketGateway:
    url: str
    port: int
    keys: list[IssuedKeys]
    crm: FakeUpstream
    proxy: ProxyApp

    def key(self, index: int = 0) -> str:
        return self.keys[index].access_key.reveal()

    def refresh_key(self, index: int = 0) -> str:
        return self.keys[index].refresh_key.reveal()


async def _build(
    crm_url: str, options: dict[str, Any]
) -> tuple[Starlette, list[IssuedKeys], ProxyApp]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    crm = ServiceConfig(
        name="crm",
        base_url=crm_url + "/v2",
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
        **options,
    )
    swapper = CredentialSwapper(vault, clock=clock)
    guard = Guard(store, clock=clock, services=[crm], swapper=swapper)
    swapper.audit = guard.audit
    keys = []
    for user_id, grants in (
        ("user-1", "crm:write"),
        ("user-2", "crm:write"),
        ("reader", "crm:read"),
    ):
        user = await make_user(store, user_id=user_id, grants=grants)
        keys.append(await guard.issuer.issue(user.id, "ws-1"))
        await vault.put("crm", CredentialOwner.USER, user.id, CRM_KEY, scope=CredentialScope.USER)
    proxy = ProxyApp(guard, "crm")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.aclose()  # the pooled upstream connections belong to the server's loop

    app = Starlette(routes=[Mount("/crm", app=proxy)], lifespan=lifespan)
    return app, keys, proxy


def fake_crm() -> FakeUpstream:
    return FakeUpstream("crm", accepted={CRM_KEY}, header="x-api-key")


@contextlib.asynccontextmanager
async def socket_gateway(
    crm: FakeUpstream | None = None, *, serve: Any = None, **options: Any
) -> AsyncIterator[SocketGateway]:
    """Serve the fake CRM (or ``serve``, an app wrapping it) and the gateway, on loopback."""
    fake = crm if crm is not None else fake_crm()
    with LoopbackServer(serve if serve is not None else fake) as upstream:
        app, keys, proxy = await _build(upstream.url, options)
        with LoopbackServer(app, lifespan="on") as server:
            yield SocketGateway(server.url, server.port, keys, fake, proxy)
