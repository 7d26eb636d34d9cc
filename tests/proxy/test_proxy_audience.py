"""RFC 8707 at the proxy: a key issued for one resource is refused at another."""

from __future__ import annotations

import httpx
import pytest

from agentguard import CredentialOwner, CredentialScope, Guard, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.errors import ConfigurationError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio

VENDOR_KEY = "vendor-real-key-0123456789abcdef"
RESOURCE = "https://gw.example.com/crm"


async def _proxy(resource: str | None) -> tuple[Guard, ProxyApp, list[httpx.Request], str]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    crm = ServiceConfig(
        name="crm",
        base_url="https://vendor.test/v1",
        placement=Placement.HEADER,
        parameter="X-Api-Key",
    )
    guard = Guard(store, clock=clock, services=[crm], swapper=CredentialSwapper(vault, clock=clock))
    user = await make_user(store, grants="crm:read")
    await vault.put("crm", CredentialOwner.USER, user.id, VENDOR_KEY, scope=CredentialScope.USER)
    seen: list[httpx.Request] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    proxy = ProxyApp(guard, "crm", transport=httpx.MockTransport(vendor), resource=resource)
    return guard, proxy, seen, user.id


@pytest.mark.parametrize(
    ("audience", "allowed"),
    [
        (None, True),  # deployment-wide key
        ("https://gw.example.com", True),  # the whole gateway
        ("https://gw.example.com/crm", True),
        ("https://GW.example.com:443/crm/", True),  # the same resource, spelled otherwise
        ("https://gw.example.com/crm/contacts", False),  # narrower than the service: not it
        ("https://gw.example.com/notes", False),
        ("https://gw.example.com/crmx", False),
        ("https://other.example.com/crm", False),
    ],
)
async def test_a_key_for_another_resource_never_reaches_the_vendor(
    audience: str | None, allowed: bool
) -> None:
    guard, proxy, seen, user_id = await _proxy(RESOURCE)
    keys = await guard.issuer.issue(user_id, "ws-1", audience=audience)
    transport = httpx.ASGITransport(app=proxy)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/contacts", headers={"X-Api-Key": keys.access_key.reveal()})
    if allowed:
        assert response.status_code == 200, response.text
        assert len(seen) == 1
    else:
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_token"
        assert response.json()["reason"] == "wrong_audience"
        assert seen == []
    await proxy.aclose()


async def test_a_proxy_without_a_resource_takes_only_keys_for_any_resource() -> None:
    """A server that names no resource cannot tell a key is meant for it: a key with an
    audience is refused there; a deployment-wide key (no audience) passes."""
    guard, proxy, seen, user_id = await _proxy(None)
    bound = await guard.issuer.issue(user_id, "ws-1", audience="https://elsewhere.example/x")
    wide = await guard.issuer.issue(user_id, "ws-1")
    transport = httpx.ASGITransport(app=proxy)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        refused = await client.get("/contacts", headers={"X-Api-Key": bound.access_key.reveal()})
        allowed = await client.get("/contacts", headers={"X-Api-Key": wide.access_key.reveal()})
    assert (refused.status_code, refused.json()["reason"]) == (401, "wrong_audience")
    assert allowed.status_code == 200
    assert len(seen) == 1
    await proxy.aclose()


@pytest.mark.parametrize("resource", ["gw.example.com/crm", "https://gw.example.com/crm?x=1"])
async def test_a_malformed_resource_is_a_configuration_error(resource: str) -> None:
    with pytest.raises(ConfigurationError, match="resource"):
        await _proxy(resource)
