"""The swap for a ``credentials = "connected"`` service: the user's own connected account,
never the vault, never anyone else's; through the proxy, a user without one gets 403
``connection_required`` naming the service and the connect link, audited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentguard import (
    AccountStatus,
    CredentialOwner,
    CredentialScope,
    Guard,
    IssuedKeys,
    ServiceConfig,
)
from agentguard._model import ConnectionStatus, Principal
from agentguard._secret import Secret
from agentguard.asgi import ProxyApp
from agentguard.connect import ConnectedAccounts, ConnectionRequired, OAuthClientConfig
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.errors import BadGateway, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeUpstream, make_user
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, token, tokens_for
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

VAULT_USER_KEY = f"vault-user-{token('k')}"
VAULT_ACCOUNT_KEY = f"vault-account-{token('k')}"
OAUTH = OAuthClientConfig(
    client_id="agentguard-crm",
    authorization_endpoint="https://auth.crm.example/authorize",
    token_endpoint="https://auth.crm.example/token",
)


class CountingVault(CredentialVault):
    reads = 0

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return await super().get(*args, **kwargs)


@dataclass
class Swap:
    clock: FakeClock
    store: MemoryStore
    vault: CountingVault
    connections: DictStore
    accounts: ConnectedAccounts
    swapper: CredentialSwapper


def connected_service(base_url: str = "https://crm.example") -> ServiceConfig:
    return ServiceConfig(
        name="crm",
        base_url=base_url,
        credentials="connected",
        oauth=OAUTH,
        allow_insecure_http=base_url.startswith("http://"),
    )


async def make_swap() -> Swap:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    keyring = KeyRing.generate()
    vault = CountingVault(store, keyring, clock=clock)
    await vault.put(
        "crm", CredentialOwner.USER, "alice", VAULT_USER_KEY, scope=CredentialScope.USER
    )
    await vault.put(
        "crm", CredentialOwner.ACCOUNT, "a1", VAULT_ACCOUNT_KEY, scope=CredentialScope.USER
    )
    connections = DictStore()
    accounts = ConnectedAccounts(
        connections,
        keyring,
        {"crm": StubVendor(clock)},
        clock=clock,
        connect_uri=lambda service: f"https://gw.example/connect/{service}",
    )
    swapper = CredentialSwapper(vault, clock=clock, connections=accounts)
    return Swap(clock, store, vault, connections, accounts, swapper)


async def test_a_connected_service_sends_the_users_connected_token() -> None:
    swap = await make_swap()
    tokens = tokens_for(swap.clock)
    await swap.accounts.connect("crm", "alice", tokens)
    outgoing = await swap.swapper.outgoing(principal("alice", swap.clock), connected_service())
    assert outgoing.credential == tokens.access_token
    assert outgoing.involved == (tokens.access_token, tokens.refresh_token)
    assert swap.vault.reads == 0


async def test_without_a_connection_the_vault_is_never_a_fallback() -> None:
    swap = await make_swap()
    await swap.accounts.connect("crm", "bob", tokens_for(swap.clock))  # someone else's
    with pytest.raises(ConnectionRequired) as refused:
        await swap.swapper.outgoing(principal("alice", swap.clock), connected_service())
    assert refused.value.reason is Reason.CONNECTION_REQUIRED
    assert refused.value.connect_uri == "https://gw.example/connect/crm"
    assert swap.vault.reads == 0


async def test_an_operator_service_still_reads_the_vault() -> None:
    swap = await make_swap()
    await swap.accounts.connect("crm", "alice", tokens_for(swap.clock))
    operator = ServiceConfig(name="crm", base_url="https://crm.example")
    outgoing = await swap.swapper.outgoing(principal("alice", swap.clock), operator)
    assert outgoing.credential.reveal() == VAULT_USER_KEY
    assert swap.vault.reads == 1


async def test_a_connected_service_without_connections_is_a_clear_502() -> None:
    swap = await make_swap()
    swapper = CredentialSwapper(swap.vault, clock=swap.clock)
    with pytest.raises(BadGateway) as refused:
        await swapper.outgoing(principal("alice", swap.clock), connected_service())
    assert refused.value.reason is Reason.CREDENTIAL_UNAVAILABLE
    assert "connections=" in refused.value.description
    assert swap.vault.reads == 0


# Through the proxy, over a real socket to the vendor's API.


@dataclass
class Gateway:
    swap: Swap
    guard: Guard
    keys: IssuedKeys
    client: httpx.AsyncClient
    upstream: FakeUpstream

    async def events(self) -> list[dict[str, Any]]:
        return [entry.event() for entry in await self.swap.store.read()]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, LoopbackServer]]:
    fake = FakeUpstream("crm")
    with LoopbackServer(fake) as server:
        yield fake, server


@pytest.fixture
async def gateway(upstream: tuple[FakeUpstream, LoopbackServer]) -> AsyncIterator[Gateway]:
    fake, server = upstream
    fake.requests.clear()
    swap = await make_swap()
    service = connected_service(server.url + "/v1")
    guard = Guard(swap.store, clock=swap.clock, services=[service], swapper=swap.swapper)
    await make_user(
        swap.store, user_id="alice", account_id="a1", workspace_id="w1", grants="crm:write"
    )
    keys = await guard.issuer.issue("alice", "w1")
    proxy = ProxyApp(guard, "crm")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://gw.test")
    try:
        yield Gateway(swap, guard, keys, client, fake)
    finally:
        await client.aclose()
        await proxy.aclose()


async def test_the_proxy_refuses_403_connection_required_and_audits_it(gateway: Gateway) -> None:
    key = gateway.keys.access_key.reveal()
    response = await gateway.client.get("/contacts", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "connection_required"
    assert body["reason"] == "connection_required"
    assert body["service"] == "crm"
    assert body["connect_uri"] == "https://gw.example/connect/crm"
    assert gateway.upstream.requests == []  # nothing was forwarded
    for secret in (VAULT_USER_KEY, VAULT_ACCOUNT_KEY):
        assert secret not in response.text
    refusals = [e for e in await gateway.events() if e.get("reason") == "connection_required"]
    [event] = refusals
    assert (event["action"], event["decision"], event["status"]) == ("proxy.upstream", "deny", 403)
    assert event["service"] == "crm" and event["actor"]["user"] == "alice"


async def test_the_proxy_sends_the_connected_token_upstream(gateway: Gateway) -> None:
    tokens = tokens_for(gateway.swap.clock)
    await gateway.swap.accounts.connect("crm", "alice", tokens)
    key = gateway.keys.access_key.reveal()
    response = await gateway.client.get("/contacts", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    [seen] = gateway.upstream.requests
    assert seen.header("authorization") == f"Bearer {tokens.access_token.reveal()}"
    assert key not in seen.raw and VAULT_USER_KEY not in seen.raw
    assert tokens.access_token.reveal() not in response.text


async def test_a_broken_connection_is_refused_with_its_reason(gateway: Gateway) -> None:
    record = await gateway.swap.accounts.connect("crm", "alice", tokens_for(gateway.swap.clock))
    gateway.swap.connections.rows[("crm", "alice")] = record.model_copy(
        update={"status": ConnectionStatus.BROKEN, "access_token": b"", "refresh_token": None}
    )
    key = gateway.keys.access_key.reveal()
    response = await gateway.client.get("/contacts", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    assert response.json()["reason"] == "connection_broken"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize("lapse", ["user_disabled", "account_closed"])
async def test_the_live_checks_refuse_before_the_connection_is_touched(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, lapse: str
) -> None:
    """A disabled user's (or closed account's) connection stays stored, and is never used:
    the guard's live checks refuse before the swap, so no vendor token is opened or renewed
    and nothing reaches the vendor's API (security review of issue 21, point 7)."""
    swap = gateway.swap
    await swap.accounts.connect("crm", "alice", tokens_for(swap.clock))
    swap.clock.advance(3600 - 30)  # due for renewal: a swap would call the vendor
    asked: list[str] = []
    original = swap.accounts.outgoing

    async def counted(principal: Any, service: str) -> Any:
        asked.append(service)
        return await original(principal, service)

    monkeypatch.setattr(swap.accounts, "outgoing", counted)
    user = await swap.store.get_user("alice")
    account = await swap.store.get_account("a1")
    assert user is not None and account is not None
    if lapse == "user_disabled":
        await swap.store.put_user(user.model_copy(update={"enabled": False}))
    else:
        await swap.store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    key = gateway.keys.access_key.reveal()
    response = await gateway.client.get("/contacts", headers={"Authorization": f"Bearer {key}"})
    assert (response.status_code, response.json()["reason"]) == (401, lapse)
    assert asked == []
    assert gateway.upstream.requests == []
    vendor = swap.accounts.vendors["crm"]
    assert isinstance(vendor, StubVendor) and vendor.presented == []
    assert swap.connections.rows[("crm", "alice")].version == 1  # stored, untouched
    await swap.store.put_user(user)  # enabled again: the same call renews and goes through
    await swap.store.put_account(account)
    response = await gateway.client.get("/contacts", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert (asked, len(vendor.presented), len(gateway.upstream.requests)) == (["crm"], 1, 1)


# A credential the upstream rejects (401): a connected account is renewed on the next call.


async def test_the_proxy_renews_a_rejected_connected_token_on_the_next_call(
    gateway: Gateway,
) -> None:
    swap = gateway.swap
    tokens = tokens_for(swap.clock, lifetime=None)  # a vendor that never sends expires_in
    await swap.accounts.connect("crm", "alice", tokens)
    key = gateway.keys.access_key.reveal()
    headers = {"Authorization": f"Bearer {key}"}
    gateway.upstream.accepted = {"no-token-is-accepted"}  # the vendor ended the session
    try:
        rejected = await gateway.client.get("/contacts", headers=headers)
    finally:
        gateway.upstream.accepted = set()
    assert rejected.status_code == 502
    body = rejected.json()
    assert body["reason"] == "upstream_rejected_credential"
    assert body["error_description"] == (
        "crm: the service rejected the credential it was sent; it is renewed before the next "
        "call (this request was not retried)"
    )
    assert tokens.access_token.reveal() not in rejected.text
    assert swap.connections.rows[("crm", "alice")].expires_at == swap.clock.now()
    vendor = swap.accounts.vendors["crm"]
    assert isinstance(vendor, StubVendor) and vendor.presented == []
    renewed = await gateway.client.get("/contacts", headers=headers)
    assert renewed.status_code == 200
    assert len(vendor.presented) == 1
    sent = gateway.upstream.requests[-1].header("authorization")
    assert sent == f"Bearer {vendor.issued[-1].access_token.reveal()}"
    assert [e["reason"] for e in await gateway.events() if e.get("status") == 502] == [
        "upstream_rejected_credential"
    ]


async def test_a_rejected_vault_credential_is_left_to_the_operator() -> None:
    swap = await make_swap()
    record = await swap.accounts.connect("crm", "alice", tokens_for(swap.clock))
    operator = ServiceConfig(name="crm", base_url="https://crm.example")
    alice = principal("alice", swap.clock)
    sent = (await swap.swapper.outgoing(alice, operator)).credential
    assert not await swap.swapper.rejected(alice, operator, sent)
    assert swap.vault.reads == 1  # the 401 read nothing
    assert swap.connections.rows[("crm", "alice")] == record


async def test_connections_that_cannot_be_told_are_not() -> None:
    swap = await make_swap()
    tokens = tokens_for(swap.clock)
    await swap.accounts.connect("crm", "alice", tokens)

    class TokenOnly:
        async def token_for(self, principal: Principal, service: str) -> Secret:
            return await swap.accounts.token_for(principal, service)

    swapper = CredentialSwapper(swap.vault, clock=swap.clock, connections=TokenOnly())
    alice = principal("alice", swap.clock)
    assert not await swapper.rejected(alice, connected_service(), tokens.access_token)
    assert await swap.swapper.rejected(alice, connected_service(), tokens.access_token)
