"""The operator listener's connected-account endpoints: list (never a token), one-time links
for enabled users of connected services only, disconnect (revoked at the vendor); operator
tokens only, clear errors, never a 500."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agentguard import Guard
from agentguard._model import Account, AccountStatus, ConnectedAccount
from agentguard._reasons import Reason
from agentguard._services import ServiceConfig
from agentguard.approvals._operators import issue_operator_token
from agentguard.asgi._operator import OperatorApp
from agentguard.asgi._operator_connections import ConnectionEndpoints, LinkIssuer
from agentguard.connect._accounts import ConnectedAccounts
from agentguard.connect._flow_errors import ConnectRefused
from agentguard.connect._flows import ConnectFlows
from agentguard.connect._vendor import VendorClient
from agentguard.credentials import KeyRing
from agentguard.storage import MemoryStore
from agentguard.storage._protocols import StorageError
from agentguard.testing import FakeClock, make_user
from agentguard.testing._oauth_vendor import FakeOAuthVendor

pytestmark = pytest.mark.anyio

ORIGIN = "https://gw.example"
VENDOR = "http://vendor.test"
REDIRECT = f"{ORIGIN}/connect/crm/callback"
FIELDS = {
    "id", "service", "user_id", "status", "scopes", "expires_at", "connected_at", "updated_at",
}  # fmt: skip


@dataclass
class Listener:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    vendor: FakeOAuthVendor
    client_for_vendor: VendorClient
    flows: ConnectFlows
    accounts: ConnectedAccounts
    client: httpx.AsyncClient
    token: str
    secrets_seen: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def connect(self, user_id: str, vendor_user: str) -> ConnectedAccount:
        """Connect ``user_id`` to ``vendor_user``'s account the way the callback does."""
        self.vendor.auto_approve = vendor_user
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        url = await self.client_for_vendor.authorization_url(
            redirect_uri=REDIRECT, state="s-" + secrets.token_hex(8), code_challenge=challenge
        )
        transport = httpx.ASGITransport(app=self.vendor)
        async with httpx.AsyncClient(transport=transport) as browser:
            consented = await browser.get(url)
        [code] = parse_qs(urlsplit(consented.headers["location"]).query)["code"]
        tokens = await self.client_for_vendor.exchange_code(
            code, redirect_uri=REDIRECT, code_verifier=verifier
        )
        self.secrets_seen.append(tokens.access_token.reveal())
        if tokens.refresh_token is not None:
            self.secrets_seen.append(tokens.refresh_token.reveal())
        return await self.accounts.connect("crm", user_id, tokens)

    async def events(self, action: str) -> list[dict[str, Any]]:
        entries = [entry.event() for entry in await self.store.read()]
        return [event for event in entries if event["action"] == action]


def _services() -> list[ServiceConfig]:
    vendor = FakeOAuthVendor(base_url=VENDOR)
    return [
        ServiceConfig(
            name="crm",
            base_url=vendor.api_url,
            allow_insecure_http=True,
            credentials="connected",
            oauth=vendor.oauth_config(),
        ),
        ServiceConfig(name="billing", base_url="https://billing.example"),
    ]


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    services = _services()
    guard = Guard(store, clock=clock, services=services)
    vendor = FakeOAuthVendor(users=("alice-v", "bob-v"), clock=clock, base_url=VENDOR)
    vendor_client = VendorClient(
        "crm",
        vendor.oauth_config(),
        client_secret=vendor.client_secret,
        transport=httpx.ASGITransport(app=vendor),
        clock=clock,
    )
    keyring = KeyRing.generate()
    flows = ConnectFlows(store, keyring, clock=clock, audit=guard.audit)
    accounts = ConnectedAccounts(
        store,
        keyring,
        {"crm": vendor_client},
        clock=clock,
        audit=guard.audit,
        connect_uri=lambda service: f"{ORIGIN}/connect/{service}",
    )
    for user in ("alice", "bob"):
        await make_user(store, user_id=user, grants="crm:write")
    await make_user(
        store, user_id="dora", account_id="acct-closed", workspace_id="ws-closed", grants="crm:read"
    )
    await store.put_account(Account(id="acct-closed", status=AccountStatus.CLOSED))
    off = await make_user(store, user_id="eve", grants="crm:read")
    await store.put_user(off.model_copy(update={"enabled": False}))
    token, _ = await issue_operator_token(store, "ops-anna", clock=clock)
    endpoints = ConnectionEndpoints(LinkIssuer(flows, store, services, ORIGIN), accounts)
    app = OperatorApp(guard, approvals=store, operators=store).with_connections(endpoints)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://operator") as client:
        yield Listener(
            clock, store, guard, vendor, vendor_client, flows, accounts, client,
            token.reveal(), [],
        )  # fmt: skip
    await vendor_client.aclose()


async def test_the_endpoints_need_an_operator_token(listener: Listener) -> None:
    issued = await listener.guard.issuer.issue("alice", "ws-1")
    for headers in ({}, {"Authorization": f"Bearer {issued.access_key.reveal()}"}):
        for method, path in (
            ("GET", "/connections"),
            ("POST", "/connections/crm/alice/link"),
            ("DELETE", "/connections/crm/alice"),
        ):
            response = await listener.client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert "www-authenticate" in response.headers
    assert await listener.events("connection.link") == []


async def test_list_shows_each_connection_and_never_a_token(listener: Listener) -> None:
    empty = await listener.client.get("/connections", headers=listener.auth)
    assert empty.status_code == 200 and empty.json() == {"connections": []}
    assert empty.headers["cache-control"] == "no-store"
    alice = await listener.connect("alice", "alice-v")
    await listener.connect("bob", "bob-v")
    response = await listener.client.get("/connections", headers=listener.auth)
    rows = response.json()["connections"]
    assert [(row["service"], row["user_id"]) for row in rows] == [("crm", "alice"), ("crm", "bob")]
    first = rows[0]
    assert set(first) == FIELDS
    assert first["id"] == alice.id and first["status"] == "active"
    assert first["scopes"] == ["contacts.read", "contacts.write"]
    assert first["connected_at"] == alice.created_at.isoformat()
    assert first["expires_at"] == (listener.clock.now() + timedelta(hours=1)).isoformat()
    assert len(listener.secrets_seen) == 4
    for secret in listener.secrets_seen:
        assert secret not in response.text
    assert base64.b64encode(alice.access_token).decode() not in response.text

    only_bob = await listener.client.get("/connections?user_id=bob", headers=listener.auth)
    assert [row["user_id"] for row in only_bob.json()["connections"]] == ["bob"]
    other = await listener.client.get("/connections?service=billing", headers=listener.auth)
    assert other.json() == {"connections": []}


@pytest.mark.parametrize(
    "query",
    ["colour=red", "user_id=a&user_id=b", "user_id=%20bad", "service=..", "a=1&b=2&c=3"],
)
async def test_bad_list_queries_are_400(listener: Listener, query: str) -> None:
    response = await listener.client.get(f"/connections?{query}", headers=listener.auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_a_link_is_one_time_for_that_user_and_audited(listener: Listener) -> None:
    response = await listener.client.post("/connections/crm/alice/link", headers=listener.auth)
    assert response.status_code == 201, response.text
    document = response.json()
    assert set(document) == {"url", "expires_at", "service", "user_id"}
    assert (document["service"], document["user_id"]) == ("crm", "alice")
    assert document["expires_at"] == (listener.clock.now() + timedelta(minutes=15)).isoformat()
    url = urlsplit(document["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{ORIGIN}/connect/crm"
    [ticket] = parse_qs(url.query)["ticket"]
    assert ticket.startswith("ag_ct_")
    assert response.headers["cache-control"] == "no-store"

    [event] = await listener.events("connection.link")
    assert event["actor"]["user"] == "alice" and event["service"] == "crm"
    assert event["detail"]["by"] == "ops-anna" and ticket not in str(event)

    flow = await listener.flows.redeem_ticket(ticket, service="crm")
    assert flow.user_id == "alice" and flow.created_by == "ops-anna"
    with pytest.raises(ConnectRefused):  # used once: gone
        await listener.flows.redeem_ticket(ticket, service="crm")


@pytest.mark.parametrize(
    ("path", "status", "error", "says"),
    [
        ("/connections/crm/nobody/link", 404, "not_found", "no user 'nobody'"),
        ("/connections/crm/eve/link", 409, "user_disabled", "user 'eve' is disabled"),
        ("/connections/crm/dora/link", 409, "account_closed", "'acct-closed' is closed"),
        ("/connections/billing/alice/link", 409, "service_not_connected", "operator-set"),
        ("/connections/mail/alice/link", 404, "not_found", "connected services: crm"),
        ("/connections/crm/%20alice/link", 404, "not_found", "no user"),
    ],
)
async def test_links_are_refused_with_clear_errors(
    listener: Listener, path: str, status: int, error: str, says: str
) -> None:
    response = await listener.client.post(path, headers=listener.auth)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and says in body["error_description"], body
    assert await listener.events("connection.link") == []


async def test_links_ask_the_directory_as_the_connect_pages_do(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One reading of "may this user connect" (connect._standing.user_standing) for the
    link, the pages and the callback: what it says, the link says."""
    from agentguard.asgi import _operator_connections
    from agentguard.connect._standing import Standing, user_standing

    asked: list[str] = []

    async def standing(directory: Any, user_id: str) -> Standing:
        asked.append(user_id)
        found = await user_standing(directory, user_id)
        return Standing(found.user, Reason.ACCOUNT_CLOSED) if user_id == "bob" else found

    monkeypatch.setattr(_operator_connections, "user_standing", standing)
    closed = await listener.client.post("/connections/crm/bob/link", headers=listener.auth)
    assert closed.status_code == 409 and closed.json()["error"] == "account_closed"
    made = await listener.client.post("/connections/crm/alice/link", headers=listener.auth)
    assert made.status_code == 201
    assert asked == ["bob", "alice"]
    # a malformed id is never looked up
    odd = await listener.client.post("/connections/crm/%20alice/link", headers=listener.auth)
    assert odd.status_code == 404 and asked == ["bob", "alice"]


async def test_a_disconnect_revokes_at_the_vendor_and_is_audited(listener: Listener) -> None:
    await listener.connect("alice", "alice-v")
    refresh = listener.secrets_seen[1]
    assert listener.vendor.is_active(refresh)
    response = await listener.client.delete("/connections/crm/alice", headers=listener.auth)
    assert response.status_code == 200 and response.json() == {"disconnected": True}
    assert not listener.vendor.is_active(refresh) and listener.vendor.revoked >= 1
    assert await listener.accounts.list() == []
    [event] = await listener.events("connection.disconnect")
    assert event["actor"]["user"] == "alice" and event["detail"]["by"] == "ops-anna"
    for path in ("/connections/crm/alice", "/connections/crm/nobody", "/connections/crm/%20x"):
        again = await listener.client.delete(path, headers=listener.auth)
        assert again.status_code == 404 and again.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/connections", "GET"),
        ("GET", "/connections/crm/alice/link", "POST"),
        ("GET", "/connections/crm/alice", "DELETE"),
    ],
)
async def test_a_wrong_method_is_405(
    listener: Listener, method: str, path: str, allowed: str
) -> None:
    response = await listener.client.request(method, path, headers=listener.auth)
    assert response.status_code == 405 and response.headers["allow"] == allowed


async def test_unknown_connection_paths_are_404(listener: Listener) -> None:
    for path in ("/connections/crm", "/connections/crm/alice/link/more"):
        response = await listener.client.get(path, headers=listener.auth)
        assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_without_connected_services_the_endpoints_do_not_exist() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    token, _ = await issue_operator_token(store, "ops", clock=clock)
    app = OperatorApp(Guard(store, clock=clock), approvals=store, operators=store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://operator") as client:
        headers = {"Authorization": f"Bearer {token.reveal()}"}
        response = await client.get("/connections", headers=headers)
    assert response.status_code == 404
    assert "no service uses connected accounts" in response.json()["error_description"]


async def test_a_store_outage_is_503_never_500(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**options: object) -> list[ConnectedAccount]:
        raise StorageError("the database went away")

    monkeypatch.setattr(listener.store, "list_connections", broken)
    response = await listener.client.get("/connections", headers=listener.auth)
    assert response.status_code == 503 and "retry-after" in response.headers
