"""Three upstream services in the shape of the seeds, behind a guarded gateway.

- ``crm``: user-scoped key in an ``X-Api-Key`` header (the key is the run's canary).
- ``automations``: user-scoped key in an ``api_key`` query parameter.
- ``projects``: only an admin key exists; the gateway mints a user-scoped token (RFC 8693).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import (
    CredentialOwner,
    CredentialScope,
    Grants,
    Guard,
    IssuedKeys,
    Placement,
    ServiceConfig,
    ServiceTimeouts,
    User,
)
from agentguard.asgi import OAuthApp, ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing, TokenExchangeMinter
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeTokenExchange, FakeUpstream, make_user
from tests.conftest import CANARY
from tests.support.servers import LoopbackServer

# Every real credential here contains the canary, so the session-wide log scan covers them all.
AUTOMATIONS_KEY = f"auto-{CANARY}"
ADMIN_KEY = f"admin-{CANARY}"


@dataclass
class Upstreams:
    crm: FakeUpstream
    automations: FakeUpstream
    projects: FakeUpstream
    exchange: FakeTokenExchange
    servers: dict[str, LoopbackServer] = field(default_factory=dict)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    exchange = FakeTokenExchange(admin_key=ADMIN_KEY)
    found = Upstreams(
        crm=FakeUpstream("crm", accepted={CANARY}, header="x-api-key"),
        automations=FakeUpstream("automations", accepted={AUTOMATIONS_KEY}, query="api_key"),
        projects=FakeUpstream("projects"),
        exchange=exchange,
    )
    with (
        LoopbackServer(found.crm) as crm,
        LoopbackServer(found.automations) as automations,
        LoopbackServer(found.projects) as projects,
        LoopbackServer(exchange) as token,
    ):
        found.servers = {
            "crm": crm,
            "automations": automations,
            "projects": projects,
            "token": token,
        }
        yield found


def services(upstreams: Upstreams, timeouts: ServiceTimeouts | None = None) -> list[ServiceConfig]:
    extra = {"timeouts": timeouts} if timeouts is not None else {}
    return [
        ServiceConfig(
            name="crm",
            base_url=upstreams.servers["crm"].url + "/v2",
            placement=Placement.HEADER,
            parameter="X-Api-Key",
            allow_insecure_http=True,
            forward_headers=True,
            **extra,  # type: ignore[arg-type]
        ),
        ServiceConfig(
            name="automations",
            base_url=upstreams.servers["automations"].url,
            placement=Placement.QUERY,
            parameter="api_key",
            allow_insecure_http=True,
        ),
        ServiceConfig(
            name="projects",
            base_url=upstreams.servers["projects"].url + "/api",
            allow_insecure_http=True,
        ),
    ]


@dataclass
class Gateway:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    vault: CredentialVault
    swapper: CredentialSwapper
    user: User
    keys: IssuedKeys
    client: httpx.AsyncClient
    upstreams: Upstreams
    apps: list[ProxyApp]
    minter: TokenExchangeMinter

    async def aclose(self) -> None:
        for app in self.apps:
            await app.aclose()
        await self.minter.aclose()
        await self.client.aclose()

    @property
    def key(self) -> str:
        return self.keys.access_key.reveal()

    async def events(self) -> list[dict[str, object]]:
        return [e.event() for e in await self.store.read()]


async def build_gateway(upstreams: Upstreams, **service_options: ServiceTimeouts) -> Gateway:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    minter = TokenExchangeMinter(
        upstreams.servers["token"].url + "/token", allow_insecure_http=True, clock=clock
    )
    guard_services = services(upstreams, **service_options)
    swapper = CredentialSwapper(vault, minters={"projects": minter}, clock=clock)
    guard = Guard(store, clock=clock, services=guard_services, swapper=swapper)
    swapper.audit = guard.audit
    user = await make_user(store, grants="crm:write automations:read projects:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    await vault.put("crm", CredentialOwner.USER, user.id, CANARY, scope=CredentialScope.USER)
    await vault.put(
        "automations", CredentialOwner.USER, user.id, AUTOMATIONS_KEY, scope=CredentialScope.USER
    )
    await vault.put(
        "projects", CredentialOwner.ACCOUNT, "acct-1", ADMIN_KEY, scope=CredentialScope.ADMIN
    )
    apps = [ProxyApp(guard, name) for name in ("crm", "automations", "projects")]
    app = Starlette(
        routes=[
            *(Mount(f"/{proxy.service.name}", app=proxy) for proxy in apps),
            Mount("/oauth", app=OAuthApp(guard)),
        ]
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    )
    return Gateway(clock, store, guard, vault, swapper, user, keys, client, upstreams, apps, minter)


@pytest.fixture
async def gateway(upstreams: Upstreams) -> AsyncIterator[Gateway]:
    for fake in (upstreams.crm, upstreams.automations, upstreams.projects):
        fake.requests.clear()
    upstreams.exchange.calls.clear()
    built = await build_gateway(upstreams)
    try:
        yield built
    finally:
        await built.aclose()


def grants(scope: str) -> Grants:
    return Grants.from_scope(scope)
