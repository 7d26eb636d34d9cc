"""The connect flow end to end over real sockets: a browser (an httpx client with a cookie jar),
the gateway's ConnectApp under uvicorn, and FakeOAuthVendor under uvicorn. Every failure the
issue names: bad state, replayed state, wrong browser, ticket replay, ticket for another
service, PKCE mismatch (an injected code), the vendor's access_denied, the vendor unreachable,
a cross-site POST. The pages name the agentguard user a link binds; with the application's
sign-in (``identify``) only that user may use it; the directory is read again at every step."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import Grants, Guard, Principal, ServiceConfig
from agentguard._redaction import install_log_redaction
from agentguard.asgi import ConnectApp
from agentguard.asgi._types import Scope
from agentguard.connect import ConnectedAccounts, ConnectFlows
from agentguard.connect._flow_errors import (
    LINK_GONE,
    LINK_OTHER_SERVICE,
    STATE_GONE,
    WRONG_BROWSER,
)
from agentguard.connect._flow_tokens import generate_state
from agentguard.connect._vendor import VendorClient
from agentguard.credentials import KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeOAuthVendor, make_user
from tests.support.servers import LoopbackServer, free_port

pytestmark = pytest.mark.anyio

install_log_redaction()  # httpx logs request URLs, which carry tickets, states and codes

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
}


@dataclass
class Gateway:
    url: str
    store: MemoryStore
    guard: Guard
    flows: ConnectFlows
    accounts: ConnectedAccounts
    vendor: FakeOAuthVendor
    secrets_seen: list[str] = field(default_factory=list)

    async def ticket(self, user: str = "alice", service: str = "crm") -> str:
        ticket, _ = await self.flows.issue_ticket(service, user, by="op-test")
        self.secrets_seen.append(ticket.reveal())
        return ticket.reveal()

    async def events(self, action: str) -> list[dict[str, Any]]:
        return [e.event() for e in await self.store.read() if e.event()["action"] == action]

    def counted(self) -> int:
        """Refusals that named no one, counted for the summary instead of appended."""
        summaries = self.guard.audit.summaries
        assert summaries is not None
        return summaries.held

    async def connected(self, user: str, service: str = "crm") -> bool:
        return await self.store.get_connection(service, user) is not None


async def identify_by_header(scope: Scope) -> str | None:
    """The test application's "session": a header naming the signed-in user."""
    for name, value in scope["headers"]:
        if name == b"x-session-user":
            return str(value.decode("ascii"))
    return None


USERS = {"alice": "Alice Liddell", "mallory": "", "bob": "", "carol": ""}


async def seed_users(store: MemoryStore) -> None:
    for user, name in USERS.items():
        await make_user(store, user_id=user, grants="crm:write", name=name)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    vendor = FakeOAuthVendor(users=("alice-crm", "mallory-crm"), auto_approve="alice-crm")
    with LoopbackServer(vendor) as vendor_server:
        vendor.bind(vendor_server.url)
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        configs = {
            "crm": vendor.oauth_config(),
            "calendar": vendor.oauth_config(),
            "lost": vendor.oauth_config(discovery=True, issuer=dead),  # metadata unreachable
            "dead": vendor.oauth_config(token_endpoint=dead + "/token"),  # token unreachable
        }
        services = [
            ServiceConfig(
                name=name,
                base_url=vendor.api_url,
                allow_insecure_http=True,
                credentials="connected",
                oauth=config,
            )
            for name, config in configs.items()
        ]
        services.append(ServiceConfig(name="billing", base_url="https://billing.example"))
        store = MemoryStore()
        anyio.run(seed_users, store)
        guard = Guard(store, services=services)
        keyring = KeyRing.generate()
        vendors = {
            name: VendorClient(name, config, client_secret=vendor.client_secret, timeout=5)
            for name, config in configs.items()
        }
        flows = ConnectFlows(store, keyring, audit=guard.audit)
        accounts = ConnectedAccounts(store, keyring, vendors, audit=guard.audit)
        connect = ConnectApp(
            guard,
            flows=flows,
            accounts=accounts,
            vendors=vendors,
            public_origin=origin,
            identify=identify_by_header,
        )

        # the vendor clients' connections live in the server's event loop: closed there
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            for client in vendors.values():
                await client.aclose()

        app = Starlette(routes=[Mount("/connect", app=connect)], lifespan=lifespan)
        with LoopbackServer(app, port=port, lifespan="on"):
            yield Gateway(origin, store, guard, flows, accounts, vendor)


class Browser:
    """A browser, as far as the connect flow can tell: cookies, no automatic redirects, and the
    Origin and Sec-Fetch-Site headers a browser puts on a same-origin form post. ``user`` is
    who is signed in to the test application (its "session" header on every request)."""

    def __init__(self, gateway: Gateway, user: str | None = "alice") -> None:
        self.gateway = gateway
        session = {} if user is None else {"x-session-user": user}
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=10, headers=session)
        self.pages: list[httpx.Response] = []

    async def get(self, url: str, **options: Any) -> httpx.Response:
        response = await self.http.get(url, **options)
        self.pages.append(response)
        return response

    async def post(
        self, service: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = (
            {"origin": self.gateway.url, "sec-fetch-site": "same-origin"}
            if headers is None
            else headers
        )
        response = await self.http.post(
            f"{self.gateway.url}/connect/{service}", data=form, headers=sent
        )
        self.pages.append(response)
        return response

    async def open_link(self, ticket: str, service: str = "crm") -> str:
        """Open the connect link; return the ticket the page's form carries."""
        page = await self.get(f"{self.gateway.url}/connect/{service}", params={"ticket": ticket})
        assert page.status_code == 200, page.text
        found = re.search(r'name="ticket" value="([^"]+)"', page.text)
        assert found is not None
        return found.group(1)

    async def start(self, ticket: str, service: str = "crm") -> str:
        """Open the link and press Connect; return where the gateway sends the browser."""
        carried = await self.open_link(ticket, service)
        answer = await self.post(service, {"ticket": carried, "action": "connect"})
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]

    async def at_vendor(self, location: str) -> str:
        """The vendor approves at once; return the callback URL it redirects to."""
        answer = await self.get(location)
        assert answer.status_code == 302, answer.text
        callback: str = answer.headers["location"]
        return callback

    async def connect(self, ticket: str, service: str = "crm") -> httpx.Response:
        return await self.get(await self.at_vendor(await self.start(ticket, service)))

    def cookie(self, service: str = "crm") -> str | None:
        name = f"agentguard_connect_{service}"  # the name on plain http
        return next((c.value for c in self.http.cookies.jar if c.name == name), None)

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def browser(gateway: Gateway) -> AsyncIterator[Browser]:
    opened = Browser(gateway)
    yield opened
    await opened.aclose()


@pytest.fixture
async def other_browser(gateway: Gateway) -> AsyncIterator[Browser]:
    opened = Browser(gateway, "mallory")
    yield opened
    await opened.aclose()


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def with_params(url: str, **params: str) -> str:
    merged = {**query(url), **params}
    return url.split("?", 1)[0] + "?" + urlencode(merged)


def assert_page(response: httpx.Response, status: int, text: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    if text is not None:
        assert text in response.text


def assert_nothing_echoed(browser: Browser, ticket: str, *values: str) -> None:
    """No page, header or cookie the gateway sent repeats a ticket, state, code or token:
    the ticket only in the confirmation form's hidden field, the state only in the 303 to the
    vendor."""
    pages = [p for p in browser.pages if str(p.request.url).startswith(browser.gateway.url)]
    assert pages
    for page in pages:
        text = page.text.replace(f'<input type="hidden" name="ticket" value="{ticket}">', "")
        rendered = text + repr(dict(page.headers.items()))
        assert ticket not in rendered
        if page.status_code != 303:
            assert all(value not in rendered for value in values)


def principal(user_id: str) -> Principal:
    from datetime import datetime, timezone

    return Principal(
        user_id=user_id,
        workspace_id="w1",
        account_id="a1",
        key_id=f"key_{user_id}",
        family_id=f"fam_{user_id}",
        grants=Grants.from_scope("crm:write"),
        expires_at=datetime.now(timezone.utc) + timedelta(hours=1),
    )


# --- the happy path --------------------------------------------------------------------------


async def test_a_human_connects_with_a_link_and_the_agent_gets_that_account(
    gateway: Gateway, browser: Browser
) -> None:
    ticket = await gateway.ticket("alice")
    location = await browser.start(ticket)
    assert browser.cookie() is not None
    sent = query(location)
    assert location.startswith(gateway.vendor.issuer + "/authorize?")
    assert sent["redirect_uri"] == f"{gateway.url}/connect/crm/callback"
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert sent["response_type"] == "code" and len(sent["state"]) == 43
    callback = await browser.at_vendor(location)
    assert callback.startswith(f"{gateway.url}/connect/crm/callback?")
    done = await browser.get(callback)
    assert_page(done, 200, "Your crm account is connected to agentguard user alice (Alice Liddell)")
    assert browser.cookie() is None  # cleared: Max-Age=0
    assert "Max-Age=0" in done.headers["set-cookie"]
    # the stored tokens are the vendor's, for the vendor account that approved
    token = await gateway.accounts.token_for(principal("alice"), "crm")
    assert gateway.vendor.is_active(token)
    async with httpx.AsyncClient() as api:
        seen = await api.get(
            gateway.vendor.api_url + "/me", headers={"authorization": f"Bearer {token.reveal()}"}
        )
    assert seen.json()["vendor_user"] == "alice-crm"
    [link] = await gateway.events("connection.link")
    [connected] = await gateway.events("connection.connect")
    assert link["actor"]["user"] == connected["actor"]["user"] == "alice"
    assert connected["service"] == "crm"
    assert await gateway.events("connection.refuse") == []
    assert_nothing_echoed(browser, ticket, sent["state"], query(callback)["code"], token.reveal())


async def test_the_confirmation_page_and_its_form(gateway: Gateway, browser: Browser) -> None:
    ticket = await gateway.ticket("alice")
    page = await browser.get(f"{gateway.url}/connect/crm", params={"ticket": ticket})
    assert_page(page, 200, "Connect your crm account")
    assert (
        "This link connects a crm account to agentguard user <strong>alice (Alice Liddell)"
        "</strong>. <strong>Continue only if you are alice</strong>: whoever continues connects "
        "their own crm account to alice, and alice's agents will act with it."
    ) in page.text
    assert page.headers["referrer-policy"] == "same-origin"  # the form must carry its Origin
    assert 'method="post" action="/connect/crm"' in page.text
    assert 'name="action" value="connect"' in page.text
    assert 'name="action" value="disconnect"' in page.text
    assert "<script" not in page.text


async def test_opening_the_link_does_not_use_it_up(gateway: Gateway, browser: Browser) -> None:
    ticket = await gateway.ticket("alice")
    for _ in range(3):  # a mail scanner, a link preview, then the person
        await browser.open_link(ticket)
    done = await browser.connect(ticket)
    assert_page(done, 200, "connected")


async def test_disconnect_removes_the_connection_and_revokes_it(
    gateway: Gateway, browser: Browser
) -> None:
    assert_page(await browser.connect(await gateway.ticket("alice")), 200)
    assert await gateway.connected("alice")
    carried = await browser.open_link(await gateway.ticket("alice"))
    gone = await browser.post("crm", {"ticket": carried, "action": "disconnect"})
    assert_page(gone, 200, "Your crm account is disconnected from agentguard user alice")
    assert not await gateway.connected("alice")
    assert gateway.vendor.revoked >= 1
    [event] = await gateway.events("connection.disconnect")
    assert event["actor"]["user"] == "alice"


# --- the state -------------------------------------------------------------------------------


async def test_a_replayed_callback_is_refused(gateway: Gateway, browser: Browser) -> None:
    location = await browser.start(await gateway.ticket("alice"))
    callback = await browser.at_vendor(location)
    assert_page(await browser.get(callback), 200)
    before = await gateway.store.get_connection("crm", "alice")
    replay = await browser.get(callback)
    assert_page(replay, 403, STATE_GONE)
    assert await gateway.store.get_connection("crm", "alice") == before
    # a used state names no one any more: counted for the refusal summary, not one event each
    assert await gateway.events("connection.refuse") == []
    assert gateway.counted() == 1


@pytest.mark.parametrize("bad", ["unknown", "malformed", "missing"])
async def test_a_bad_state_is_refused(gateway: Gateway, browser: Browser, bad: str) -> None:
    location = await browser.start(await gateway.ticket("alice"))
    callback = await browser.at_vendor(location)
    if bad == "missing":
        params = query(callback)
        del params["state"]
        forged = callback.split("?")[0] + "?" + urlencode(params)
        assert_page(await browser.get(forged), 400, "lacks its state or its code")
    else:
        state = generate_state().reveal() if bad == "unknown" else "not-our-state"
        assert_page(await browser.get(with_params(callback, state=state)), 403, STATE_GONE)
    assert not await gateway.connected("alice")
    # the real state is untouched by the forgery and still works
    assert_page(await browser.get(callback), 200)


async def test_a_callback_in_a_browser_without_the_cookie_is_refused(
    gateway: Gateway, browser: Browser, other_browser: Browser
) -> None:
    callback = await browser.at_vendor(await browser.start(await gateway.ticket("alice")))
    stolen = await other_browser.get(callback)
    assert_page(stolen, 403, WRONG_BROWSER)
    assert not await gateway.connected("alice")
    # the state is used up: the link leaked, so the person starts again
    assert_page(await browser.get(callback), 403, STATE_GONE)
    whys = [e["detail"]["why"] for e in await gateway.events("connection.refuse")]
    assert whys == ["no_browser_cookie"]  # the replay of a used state is counted, not appended
    assert gateway.counted() == 1


async def test_a_callback_in_a_browser_with_another_flows_cookie_is_refused(
    gateway: Gateway, browser: Browser, other_browser: Browser
) -> None:
    # mallory starts her own flow (her browser gets its own cookie), then sends alice's
    # browser her callback: alice's cookie is not the one mallory's state is bound to
    mallory_callback = await other_browser.at_vendor(
        await other_browser.start(await gateway.ticket("mallory"))
    )
    await browser.start(await gateway.ticket("alice"))
    assert browser.cookie() is not None
    assert_page(await browser.get(mallory_callback), 403, WRONG_BROWSER)
    assert not await gateway.connected("mallory") and not await gateway.connected("alice")
    [refused] = await gateway.events("connection.refuse")
    assert refused["actor"]["user"] == "mallory" and refused["detail"]["why"] == "other_browser"


async def test_a_signed_in_user_other_than_the_one_who_started_is_refused(
    gateway: Gateway, browser: Browser
) -> None:
    callback = await browser.at_vendor(await browser.start(await gateway.ticket("alice")))
    other = await browser.get(callback, headers={"x-session-user": "bob"})
    assert_page(other, 403, "finished by the user who started it")
    assert not await gateway.connected("alice") and not await gateway.connected("bob")


# --- the ticket ------------------------------------------------------------------------------


async def test_a_used_ticket_is_refused(gateway: Gateway, browser: Browser) -> None:
    ticket = await gateway.ticket("alice")
    await browser.start(ticket)
    replay = await browser.post("crm", {"ticket": ticket, "action": "connect"})
    assert_page(replay, 403, LINK_GONE)
    assert replay.headers.get("location") is None


async def test_an_expired_ticket_reads_like_a_used_one(gateway: Gateway, browser: Browser) -> None:
    short = ConnectFlows(gateway.store, KeyRing.generate(), ticket_ttl=timedelta(microseconds=1))
    expired, _ = await short.issue_ticket("crm", "alice", by="op-test")
    used = await gateway.ticket("alice")
    await browser.start(used)
    answers = [
        await browser.post("crm", {"ticket": t, "action": "connect"})
        for t in (expired.reveal(), used)
    ]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].text == answers[1].text


async def test_a_ticket_for_another_service_is_refused(gateway: Gateway, browser: Browser) -> None:
    ticket = await gateway.ticket("alice", service="calendar")
    page = await browser.get(f"{gateway.url}/connect/crm", params={"ticket": ticket})
    assert_page(page, 403, LINK_OTHER_SERVICE)  # the page looked it up, and left it
    assert gateway.counted() == 1  # it used nothing up: counted, not its own event
    refused = await browser.post("crm", {"ticket": ticket, "action": "connect"})
    assert_page(refused, 403, LINK_OTHER_SERVICE)  # used up now
    assert browser.cookie() is None
    whys = [
        (e["detail"]["step"], e["detail"]["why"]) for e in await gateway.events("connection.refuse")
    ]
    assert whys == [("ticket", "other_service")]
    assert_page(
        await browser.post("calendar", {"ticket": ticket, "action": "connect"}), 403, LINK_GONE
    )


async def test_a_ticket_for_another_signed_in_user_is_refused(
    gateway: Gateway, browser: Browser
) -> None:
    # mallory sends alice her own link ("connect your CRM"); alice is signed in as alice
    ticket = await gateway.ticket("mallory")
    page = await browser.get(f"{gateway.url}/connect/crm", params={"ticket": ticket})
    assert_page(page, 403, "another user than the one signed in")
    assert 'name="ticket"' not in page.text and "Connect</button>" not in page.text
    assert gateway.counted() == 1  # the page used nothing up: counted
    refused = await browser.post("crm", {"ticket": ticket, "action": "connect"})
    assert_page(refused, 403, "another user than the one signed in")
    assert refused.headers.get("location") is None and browser.cookie() is None
    events = await gateway.events("connection.refuse")
    assert [(e["actor"]["user"], e["detail"]["step"], e["detail"]["why"]) for e in events] == [
        ("mallory", "post", "other_user"),
    ]
    assert events[0]["detail"]["signed_in_user"] == "alice"
    assert not await gateway.connected("mallory")


async def test_with_a_sign_in_a_link_needs_its_user_signed_in(gateway: Gateway) -> None:
    nobody = Browser(gateway, user=None)
    try:
        ticket = await gateway.ticket("alice")
        page = await nobody.get(f"{gateway.url}/connect/crm", params={"ticket": ticket})
        assert_page(page, 403, "sign in here as alice first")
        assert gateway.counted() == 1  # the page used nothing up: counted
        posted = await nobody.post("crm", {"ticket": ticket, "action": "connect"})
        assert_page(posted, 403, "sign in here as alice first")
        assert posted.headers.get("location") is None
    finally:
        await nobody.aclose()
    whys = [
        (e["actor"]["user"], e["detail"]["why"]) for e in await gateway.events("connection.refuse")
    ]
    assert whys == [("alice", "not_signed_in")]  # the form's, which used the link up


async def test_a_signed_in_user_connects_without_a_link(gateway: Gateway, browser: Browser) -> None:
    session = {"x-session-user": "carol"}
    page = await browser.get(f"{gateway.url}/connect/crm", headers=session)
    assert_page(page, 200, "Connect your crm account")
    assert "This page connects a crm account to agentguard user <strong>carol</strong>" in page.text
    assert 'name="ticket"' not in page.text
    started = await browser.post(
        "crm",
        {"action": "connect"},
        {"origin": gateway.url, "sec-fetch-site": "same-origin", **session},
    )
    assert started.status_code == 303
    callback = await browser.at_vendor(started.headers["location"])
    assert_page(await browser.get(callback, headers=session), 200)
    assert await gateway.connected("carol")


# --- cross-site form posts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
        {"origin": "https://evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "null"},
        {},
    ],
    ids=["both", "origin", "fetch-site", "same-site", "null-origin", "neither"],
)
async def test_a_cross_site_post_is_refused_and_leaves_the_ticket(
    gateway: Gateway, browser: Browser, headers: dict[str, str]
) -> None:
    ticket = await gateway.ticket("alice")
    refused = await browser.post("crm", {"ticket": ticket, "action": "connect"}, headers)
    assert_page(refused, 403, "own connect page")
    assert browser.cookie() is None
    # names no one (the ticket is not looked at): counted per source and interval
    assert await gateway.events("connection.refuse") == []
    assert gateway.counted() == 1
    assert_page(await browser.connect(ticket), 200)  # the person's own post still works


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "GATEWAY", "sec-fetch-site": "same-origin"},
        {"origin": "GATEWAY"},
        {"origin": "null", "sec-fetch-site": "same-origin"},  # under Referrer-Policy: no-referrer
        {"sec-fetch-site": "same-origin"},
    ],
)
async def test_a_same_origin_post_is_accepted(
    gateway: Gateway, browser: Browser, headers: dict[str, str]
) -> None:
    sent = {k: gateway.url if v == "GATEWAY" else v for k, v in headers.items()}
    carried = await browser.open_link(await gateway.ticket("alice"))
    answer = await browser.post("crm", {"ticket": carried, "action": "connect"}, sent)
    assert answer.status_code == 303


# --- PKCE and the vendor ---------------------------------------------------------------------


async def test_an_injected_code_fails_pkce_at_the_vendor(
    gateway: Gateway, browser: Browser, other_browser: Browser
) -> None:
    # mallory gets a code for her own vendor account (bound to her PKCE challenge) and slips it
    # into alice's callback: alice's state and cookie are right, her verifier is not
    mallory_callback = await other_browser.at_vendor(
        await other_browser.start(await gateway.ticket("mallory"))
    )
    alice_callback = await browser.at_vendor(await browser.start(await gateway.ticket("alice")))
    injected = with_params(alice_callback, code=query(mallory_callback)["code"])
    answer = await browser.get(injected)
    assert_page(answer, 400, "did not accept the authorization")
    assert not await gateway.connected("alice")
    [refused] = await gateway.events("connection.refuse")
    assert refused["actor"]["user"] == "alice"
    assert refused["detail"] == {
        "step": "token",
        "why": "code_refused",
        "vendor_error": "invalid_grant",
    }
    assert browser.cookie() is None


async def test_a_tampered_challenge_fails_pkce_at_the_vendor(
    gateway: Gateway, browser: Browser
) -> None:
    location = await browser.start(await gateway.ticket("alice"))
    tampered = with_params(location, code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    answer = await browser.get(await browser.at_vendor(tampered))
    assert_page(answer, 400, "did not accept the authorization")
    assert not await gateway.connected("alice")


async def test_the_vendor_refusing_access_is_reported_and_uses_the_state_up(
    gateway: Gateway, browser: Browser
) -> None:
    location = await browser.start(await gateway.ticket("alice"))
    gateway.vendor.fail_next("authorize", 302, "access_denied")
    callback = await browser.at_vendor(location)
    assert query(callback)["error"] == "access_denied"
    answer = await browser.get(callback)
    assert_page(answer, 403, "did not authorize the connection")
    assert browser.cookie() is None
    [refused] = await gateway.events("connection.refuse")
    assert (
        refused["actor"]["user"] == "alice" and refused["detail"]["vendor_error"] == "access_denied"
    )
    # the state is gone: a code forged for it afterwards gets nowhere
    late = with_params(callback.replace("error=access_denied", ""), code="whatever")
    assert (await browser.get(late)).status_code in (400, 403)
    assert not await gateway.connected("alice")


async def test_a_vendor_error_text_is_not_echoed(gateway: Gateway, browser: Browser) -> None:
    url = f"{gateway.url}/connect/crm/callback?" + urlencode(
        {"error": "<script>alert(1)</script>", "error_description": "Call 555-0100 now"}
    )
    answer = await browser.get(url)
    assert_page(answer, 400, "refused the authorization request (other)")
    assert "<script>" not in answer.text and "555-0100" not in answer.text


async def test_an_unreachable_token_endpoint_is_a_502(gateway: Gateway, browser: Browser) -> None:
    answer = await browser.connect(await gateway.ticket("alice", service="dead"), service="dead")
    assert_page(answer, 502, "could not be reached")
    assert not await gateway.connected("alice", service="dead")
    [refused] = await gateway.events("connection.refuse")
    assert refused["reason"] == "vendor_unavailable" and refused["status"] == 502


async def test_a_token_endpoint_answering_5xx_is_a_502(gateway: Gateway, browser: Browser) -> None:
    location = await browser.start(await gateway.ticket("alice"))
    callback = await browser.at_vendor(location)
    gateway.vendor.fail_next("token", 503)
    assert_page(await browser.get(callback), 502, "could not be reached")


async def test_unreachable_vendor_metadata_is_a_502_before_leaving(
    gateway: Gateway, browser: Browser
) -> None:
    carried = await browser.open_link(await gateway.ticket("alice", service="lost"), "lost")
    answer = await browser.post("lost", {"ticket": carried, "action": "connect"})
    assert_page(answer, 502, "could not be reached")
    assert answer.headers.get("location") is None
    assert "set-cookie" not in answer.headers
