"""The credential-swap scene of ``agentguard demo``: two fake vendors, in-process.

The CRM takes a user-scoped key in ``X-Api-Key``; the projects board only issued an admin key,
so the gateway mints a short-lived token for the one user (RFC 8693) and never sends the admin
key. The fakes print what they received.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agentguard._clock import Clock
from agentguard._guard import Guard
from agentguard._model import CredentialOwner, CredentialScope, User
from agentguard._services import Placement, ServiceConfig
from agentguard.asgi._proxy import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing, TokenExchangeMinter
from agentguard.storage._protocols import CredentialStore
from agentguard.testing._upstreams import FakeTokenExchange, FakeUpstream

__all__ = ["Vendors", "set_up_vendors"]

CRM_KEY = "crm-live-7f3a9c2e51d04b86a1e0"
PROJECTS_ADMIN_KEY = "projects-admin-c0ffee1234567890"
SERVICES = [
    ServiceConfig(
        name="crm",
        base_url="https://crm.vendor.test/v2",
        placement=Placement.HEADER,
        parameter="X-Api-Key",
    ),
    ServiceConfig(name="projects", base_url="https://projects.vendor.test/api"),
]


@dataclass
class Vendors:
    """The fakes, their proxies and the swapper, ready to mount."""

    crm: FakeUpstream
    projects: FakeUpstream
    exchange: FakeTokenExchange
    proxies: dict[str, ProxyApp]
    minter: TokenExchangeMinter

    async def aclose(self) -> None:
        for proxy in self.proxies.values():
            await proxy.aclose()
        await self.minter.aclose()


async def set_up_vendors(guard: Guard, store: CredentialStore, clock: Clock, user: User) -> Vendors:
    """Store the real keys in the vault and build a proxy per vendor."""
    crm = FakeUpstream("crm", accepted={CRM_KEY}, header="x-api-key")
    projects = FakeUpstream("projects")
    exchange = FakeTokenExchange(admin_key=PROJECTS_ADMIN_KEY)
    minter = TokenExchangeMinter(
        "https://projects.vendor.test/token",
        client=httpx.AsyncClient(transport=httpx.ASGITransport(app=exchange)),
        clock=clock,
    )
    vault = CredentialVault(store, KeyRing.generate(), clock=clock, audit=guard.audit)
    await vault.put("crm", CredentialOwner.USER, user.id, CRM_KEY, scope=CredentialScope.USER)
    await vault.put(
        "projects",
        CredentialOwner.ACCOUNT,
        user.account_id,
        PROJECTS_ADMIN_KEY,
        scope=CredentialScope.ADMIN,
    )
    swapper = CredentialSwapper(vault, minters={"projects": minter}, clock=clock, audit=guard.audit)
    proxies = {
        "crm": ProxyApp(guard, SERVICES[0], swapper, transport=httpx.ASGITransport(app=crm)),
        "projects": ProxyApp(
            guard, SERVICES[1], swapper, transport=httpx.ASGITransport(app=projects)
        ),
    }
    return Vendors(crm, projects, exchange, proxies, minter)
