"""ConnectedAccounts on the shipped stores and the FakeOAuthVendor over real sockets.

Two ConnectedAccounts instances (two gateways) share one store: one MemoryStore object, one
SQLite file opened twice, one PostgreSQL schema opened twice. A stale connection asked for by
50 concurrent callers across both renews exactly once at the vendor (counted there); two users
under concurrent load each call the vendor's API with their own token (counted there too).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from agentguard import Guard, ServiceConfig
from agentguard._model import ConnectionStatus
from agentguard._secret import Secret
from agentguard.asgi import ProxyApp
from agentguard.connect import ConnectedAccounts, ConnectionRequired, VendorTokens
from agentguard.connect._vendor import VendorClient
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.errors import BadGateway, Reason
from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore
from agentguard.testing import FakeClock, FakeOAuthVendor, make_user
from tests.backends.services import temporary_schema
from tests.connect.accounts_fakes import principal
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

REDIRECT = "https://gw.example/connect/crm/callback"
CALLERS = 50


@pytest.fixture(scope="module")
def vendor_server() -> Iterator[tuple[FakeOAuthVendor, LoopbackServer]]:
    vendor = FakeOAuthVendor(users=("alice", "bob"))
    with LoopbackServer(vendor) as server:
        vendor.bind(server.url)
        yield vendor, server


@dataclass
class Pair:
    """Two gateways' ConnectedAccounts over one shared store, and the vendor."""

    clock: FakeClock
    vendor: FakeOAuthVendor
    first: ConnectedAccounts
    second: ConnectedAccounts
    clients: tuple[VendorClient, VendorClient]
    stores: tuple[Any, Any]

    @property
    def both(self) -> tuple[ConnectedAccounts, ConnectedAccounts]:
        return self.first, self.second

    async def connect(self, user: str) -> VendorTokens:
        """The code flow at the vendor (auto-approved as ``user``), then connect()."""
        client = self.clients[0]
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        url = await client.authorization_url(
            redirect_uri=REDIRECT, state=secrets.token_urlsafe(16), code_challenge=challenge
        )
        self.vendor.auto_approve = user
        async with httpx.AsyncClient() as browser:
            answer = await browser.get(url)
        assert answer.status_code in (302, 303)
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = await client.exchange_code(code, redirect_uri=REDIRECT, code_verifier=verifier)
        await self.first.connect("crm", user, tokens)
        return tokens


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    vendor_server: tuple[FakeOAuthVendor, LoopbackServer],
) -> AsyncIterator[Pair]:
    vendor, _ = vendor_server
    clock = FakeClock()
    vendor.clock = clock
    keyring = KeyRing.generate()
    async with AsyncExitStack() as stack:
        if request.param == "memory":
            shared = MemoryStore(clock=clock)
            stores: tuple[Any, Any] = (shared, shared)
        elif request.param == "sqlite":
            path = tmp_path / "connections.db"
            stores = (
                await stack.enter_async_context(SQLiteStore(path, clock=clock)),
                await stack.enter_async_context(SQLiteStore(path, clock=clock)),
            )
        else:
            dsn, schema = await stack.enter_async_context(temporary_schema())
            stores = (
                await stack.enter_async_context(PostgresStore(dsn, schema=schema, clock=clock)),
                await stack.enter_async_context(PostgresStore(dsn, schema=schema, clock=clock)),
            )
        clients = tuple(
            VendorClient(
                "crm", vendor.oauth_config(), client_secret=vendor.client_secret, clock=clock
            )
            for _ in range(2)
        )
        for client in clients:
            stack.push_async_callback(client.aclose)
        made = [
            ConnectedAccounts(store, keyring, {"crm": client}, clock=clock, instance=name)
            for store, client, name in zip(stores, clients, ("gw-1", "gw-2"), strict=True)
        ]
        yield Pair(clock, vendor, made[0], made[1], (clients[0], clients[1]), stores)


async def test_one_refresh_at_the_vendor_for_50_callers_across_two_instances(pair: Pair) -> None:
    await pair.connect("alice")
    before = pair.vendor.refresh_calls
    pair.clock.advance(3600 - 30)  # inside refresh_ahead: every caller wants a renewal
    got: list[Secret] = []

    async def call(accounts: ConnectedAccounts) -> None:
        got.append(await accounts.token_for(principal("alice", pair.clock), "crm"))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for index in range(CALLERS):
                group.start_soon(call, pair.both[index % 2])
    assert pair.vendor.refresh_calls - before == 1
    assert len(got) == CALLERS and len(set(got)) == 1
    assert pair.vendor.is_active(got[0])
    stored = await pair.stores[1].get_connection("crm", "alice")
    assert stored.version == 2 and stored.status is ConnectionStatus.ACTIVE
    refresh = pair.first.sealer.open(stored, "refresh")
    assert refresh is not None and pair.vendor.is_active(refresh)  # the rotated one was saved


async def test_each_user_calls_the_vendor_with_their_own_token_under_load(pair: Pair) -> None:
    for user in ("alice", "bob"):
        await pair.connect(user)
    before_refresh = pair.vendor.refresh_calls
    before_api = pair.vendor.api_calls
    pair.clock.advance(3600)  # both expired: every first call renews
    answers: list[tuple[str, str]] = []

    async def call(accounts: ConnectedAccounts, user: str, http: httpx.AsyncClient) -> None:
        token = await accounts.token_for(principal(user, pair.clock), "crm")
        response = await http.get(
            pair.vendor.api_url + "/contacts", headers={"Authorization": f"Bearer {token.reveal()}"}
        )
        assert response.status_code == 200
        answers.append((user, response.json()["vendor_user"]))

    with anyio.fail_after(60):
        async with httpx.AsyncClient() as http, anyio.create_task_group() as group:
            for index in range(2 * CALLERS):
                user = ("alice", "bob")[index % 2]
                group.start_soon(call, pair.both[(index // 2) % 2], user, http)
    assert len(answers) == 2 * CALLERS
    assert all(user == seen for user, seen in answers)
    counts = pair.vendor.api_calls - before_api
    assert counts == {"alice": CALLERS, "bob": CALLERS}
    assert pair.vendor.refresh_calls - before_refresh == 2  # one per user, not per service


async def test_a_grant_the_vendor_killed_breaks_the_connection_for_both(pair: Pair) -> None:
    await pair.connect("alice")
    pair.vendor.invalidate_grants("alice")
    pair.clock.advance(3600)
    with pytest.raises(ConnectionRequired) as refused:
        await pair.first.token_for(principal("alice", pair.clock), "crm")
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    with pytest.raises(ConnectionRequired) as again:
        await pair.second.token_for(principal("alice", pair.clock), "crm")
    assert again.value.reason is Reason.CONNECTION_BROKEN
    stored = await pair.stores[1].get_connection("crm", "alice")
    assert stored.status is ConnectionStatus.BROKEN


async def test_a_vendor_outage_uses_a_valid_token_and_refuses_an_expired_one(pair: Pair) -> None:
    tokens = await pair.connect("alice")
    pair.clock.advance(3600 - 30)
    pair.vendor.fail_next("refresh", 503)
    got = await pair.first.token_for(principal("alice", pair.clock), "crm")
    assert got == tokens.access_token
    pair.clock.advance(30)
    pair.vendor.fail_next("refresh", 503)
    with pytest.raises(BadGateway) as failed:
        await pair.second.token_for(principal("alice", pair.clock), "crm")
    assert failed.value.reason is Reason.VENDOR_UNAVAILABLE
    assert ("retry-after", "1") in failed.value.response_headers()  # backing off
    pair.clock.advance(1)  # the back-off has passed
    renewed = await pair.second.token_for(principal("alice", pair.clock), "crm")  # back up
    assert renewed != tokens.access_token and pair.vendor.is_active(renewed)


async def test_disconnect_revokes_at_the_vendor_and_is_live_on_the_other_instance(
    pair: Pair,
) -> None:
    tokens = await pair.connect("alice")
    assert await pair.second.token_for(principal("alice", pair.clock), "crm")
    revoked = pair.vendor.revoked
    assert await pair.first.disconnect("crm", "alice", by="alice")
    assert pair.vendor.revoked - revoked >= 1  # revoking the grant's refresh token may end all
    assert tokens.refresh_token is not None
    assert not pair.vendor.is_active(tokens.refresh_token)
    assert not pair.vendor.is_active(tokens.access_token)
    with pytest.raises(ConnectionRequired):
        await pair.second.token_for(principal("alice", pair.clock), "crm")


async def test_the_proxy_sends_each_users_connected_token_to_the_vendor_api(
    pair: Pair,
) -> None:
    for user in ("alice", "bob"):
        await pair.connect(user)
    before = pair.vendor.api_calls
    store = MemoryStore(clock=pair.clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=pair.clock)
    service = ServiceConfig(
        name="crm",
        base_url=pair.vendor.api_url,
        credentials="connected",
        oauth=pair.vendor.oauth_config(),
        allow_insecure_http=True,
    )
    swapper = CredentialSwapper(vault, clock=pair.clock, connections=pair.second)
    guard = Guard(store, clock=pair.clock, services=[service], swapper=swapper)
    keys = {}
    for user in ("alice", "bob"):
        await make_user(store, user_id=user, grants="crm:write")
        keys[user] = (await guard.issuer.issue(user, "ws-1")).access_key.reveal()
    proxy = ProxyApp(guard, "crm")
    transport = httpx.ASGITransport(app=proxy)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as agent:
            for _ in range(3):
                for user, key in keys.items():
                    response = await agent.get("/me", headers={"Authorization": f"Bearer {key}"})
                    assert response.status_code == 200
                    assert response.json()["vendor_user"] == user
    finally:
        await proxy.aclose()
    assert pair.vendor.api_calls - before == {"alice": 3, "bob": 3}
