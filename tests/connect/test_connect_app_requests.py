"""ConnectApp's request handling in process: routing, methods, the cookie's attributes, strict
query and form parsing (hypothesis: any query string or form body is answered with a page,
never a 500), pages that escape what they show, outages as 503 pages."""

from __future__ import annotations

import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import Guard, ServiceConfig
from agentguard._keys._format import _checksum
from agentguard._model import ConnectFlow, FlowKind
from agentguard._redaction import install_log_redaction
from agentguard.asgi import ConnectApp
from agentguard.asgi._connect_pages import confirm_page, message_page
from agentguard.asgi._connect_request import is_same_origin, named_cookie, read_query
from agentguard.asgi._types import Scope
from agentguard.connect import ConnectedAccounts, ConnectFlows
from agentguard.connect._vendor import VendorClient
from agentguard.credentials import KeyRing
from agentguard.errors import ConfigurationError, InvalidRequest
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeOAuthVendor, make_user

pytestmark = pytest.mark.anyio

install_log_redaction()  # httpx logs request URLs, which carry tickets

ORIGIN = "https://gw.example"
SAME_ORIGIN = {"origin": ORIGIN, "sec-fetch-site": "same-origin"}
Identify = Callable[[Scope], Awaitable[str | None]]


class BrokenFlows(MemoryStore):
    async def put_flow(self, record: ConnectFlow) -> None:
        raise ConnectionResetError("db gone")

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        raise ConnectionResetError("db gone")


@dataclass
class Rig:
    store: MemoryStore
    flows: ConnectFlows
    app: ConnectApp
    client: httpx.AsyncClient

    async def ticket(self, user: str = "alice", service: str = "crm") -> str:
        ticket, _ = await self.flows.issue_ticket(service, user, by="op-test")
        return ticket.reveal()

    async def refusals(self) -> list[dict[str, Any]]:
        entries = await self.store.read()
        return [e.event() for e in entries if e.event()["action"] == "connection.refuse"]


def build(
    *, identify: Identify | None = None, flow_store: MemoryStore | None = None
) -> tuple[MemoryStore, ConnectFlows, ConnectApp]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vendor = FakeOAuthVendor(base_url="https://vendor.example", auto_approve="alice")
    config = vendor.oauth_config()
    guard = Guard(
        store,
        clock=clock,
        services=[
            ServiceConfig(
                name="crm", base_url="https://crm.example", credentials="connected", oauth=config
            ),
            ServiceConfig(name="billing", base_url="https://billing.example"),
        ],
    )
    keyring = KeyRing.generate()
    vendors = {
        "crm": VendorClient(
            "crm", config, client_secret=vendor.client_secret, transport=httpx.ASGITransport(vendor)
        )
    }
    flows = ConnectFlows(flow_store or store, keyring, clock=clock, audit=guard.audit)
    accounts = ConnectedAccounts(store, keyring, vendors, clock=clock, audit=guard.audit)
    app = ConnectApp(
        guard,
        flows=flows,
        accounts=accounts,
        vendors=vendors,
        public_origin=ORIGIN + "/",
        identify=identify,
    )
    return store, flows, app


async def mounted(app: ConnectApp, scope: Scope, receive: Any, send: Any) -> None:
    """The app under /connect, as a router mounts it (root_path)."""
    await app({**scope, "root_path": "/connect"}, receive, send)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store, flows, app = build()
    await make_user(store, user_id="alice", grants="crm:write")

    async def asgi(scope: Scope, receive: Any, send: Any) -> None:
        await mounted(app, scope, receive, send)

    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield Rig(store, flows, app, client)


def assert_page(response: httpx.Response, status: int, text: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    if text is not None:
        assert text in response.text


# --- routing and methods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/connect/nope",
        "/connect/billing",  # credentials = "operator": nothing to connect
        "/connect/billing/callback",
        "/connect/crm/other",
        "/connect/crm/callback/more",
        "/connect/crm/",
        "/connect/",
        "/connect",
        "/connect//crm",
    ],
)
async def test_anything_but_a_connected_services_pages_is_404(rig: Rig, path: str) -> None:
    for method in ("GET", "POST"):
        answer = await rig.client.request(method, path, headers=SAME_ORIGIN)
        assert_page(answer, 404, "no connect page at this address")
        assert answer.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/connect/crm", "GET, POST"),
        ("DELETE", "/connect/crm", "GET, POST"),
        ("HEAD", "/connect/crm", "GET, POST"),
        ("POST", "/connect/crm/callback", "GET"),
        ("OPTIONS", "/connect/crm/callback", "GET"),
    ],
)
async def test_other_methods_are_405_with_allow(
    rig: Rig, method: str, path: str, allow: str
) -> None:
    answer = await rig.client.request(method, path)
    assert answer.status_code == 405 and answer.headers["allow"] == allow


async def test_websockets_are_closed_and_lifespan_completes(rig: Rig) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(messages)

    await rig.app({"type": "websocket", "path": "/crm", "headers": []}, receive, send)
    await rig.app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "websocket.close",
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    with pytest.raises(ValueError, match="does not handle"):
        await rig.app({"type": "other"}, receive, send)


# --- the connect step ------------------------------------------------------------------------


async def test_connect_sets_a_strict_cookie_and_sends_the_browser_to_the_vendor(rig: Rig) -> None:
    answer = await rig.client.post(
        "/connect/crm",
        data={"ticket": await rig.ticket(), "action": "connect"},
        headers=SAME_ORIGIN,
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("https://vendor.example/authorize?")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"
    cookie = answer.headers["set-cookie"]
    name, value = cookie.split(";")[0].split("=", 1)
    assert name == "__Host-agentguard_connect_crm" and re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    attributes = {part.strip() for part in cookie.split(";")[1:]}
    # what __Host- requires (Secure, Path=/, no Domain), so no other host can set it
    assert attributes == {"Max-Age=600", "Path=/", "HttpOnly", "SameSite=Lax", "Secure"}
    assert value not in answer.headers["location"]


async def test_on_plain_http_the_cookie_is_not_secure() -> None:
    _, flows, app = build()
    app = ConnectApp(
        app.guard,
        flows=flows,
        accounts=app.accounts,
        vendors=app.vendors,
        public_origin="http://127.0.0.1:8080",
        mount="/c",
    )
    assert app.redirect_uri("crm") == "http://127.0.0.1:8080/c/crm/callback"
    assert "Secure" not in app._cookie("crm", None)
    assert app._cookie("crm", None).startswith("agentguard_connect_crm=;")  # no __Host- on http
    assert "Path=/c/crm" in app._cookie("crm", None)


@pytest.mark.parametrize(
    "origin",
    ["gw.example", "https://gw.example/connect", "ftp://gw.example", "https://gw.example?x=1"],
)
def test_a_public_origin_is_an_origin(origin: str) -> None:
    _, flows, app = build()
    with pytest.raises(ConfigurationError):
        ConnectApp(app.guard, flows=flows, accounts=app.accounts, vendors={}, public_origin=origin)


def test_a_vendor_for_a_service_that_is_not_connected_is_a_configuration_error() -> None:
    _, flows, app = build()
    with pytest.raises(ConfigurationError, match="billing"):
        ConnectApp(
            app.guard,
            flows=flows,
            accounts=app.accounts,
            vendors={"billing": app.vendors["crm"]},
            public_origin=ORIGIN,
        )


def test_the_origin_is_normalised() -> None:
    _, flows, app = build()
    made = ConnectApp(
        app.guard,
        flows=flows,
        accounts=app.accounts,
        vendors={},
        public_origin="HTTPS://GW.example:443",
    )
    assert made.public_origin == "https://gw.example"


# --- who the human is ------------------------------------------------------------------------


async def test_without_identify_only_a_link_identifies_a_person(rig: Rig) -> None:
    assert_page(await rig.client.get("/connect/crm"), 400, "open the connect link")
    refused = await rig.client.post("/connect/crm", data={"action": "connect"}, headers=SAME_ORIGIN)
    assert_page(refused, 403, "open the connect link")
    assert await rig.refusals() == []  # names no one: counted for the summary
    assert rig.app.guard.audit.summaries is not None
    assert rig.app.guard.audit.summaries.held == 1


async def test_a_malformed_link_is_a_400_page_and_changes_nothing(rig: Rig) -> None:
    ticket = await rig.ticket()
    for typo in (ticket[:-1], ticket + "x", ticket.replace("ag_ct_", "ag_at_"), "<b>hi</b>"):
        answer = await rig.client.get("/connect/crm", params={"ticket": typo})
        assert_page(answer, 400, "copied whole")
        assert "<b>hi</b>" not in answer.text
    assert await rig.refusals() == []


async def test_identify_none_asks_to_sign_in() -> None:
    async def nobody(scope: Scope) -> str | None:
        return None

    _, _, app = build(identify=nobody)
    async with _client(app) as client:
        assert_page(await client.get("/connect/crm"), 403, "sign in")
        posted = await client.post("/connect/crm", data={"action": "connect"}, headers=SAME_ORIGIN)
        assert_page(posted, 403, "sign in")


async def test_an_identify_that_fails_is_a_503_page_never_a_500() -> None:
    async def broken(scope: Scope) -> str | None:
        raise RuntimeError("session store down")

    _, _, app = build(identify=broken)
    async with _client(app) as client:
        answer = await client.get("/connect/crm")
    assert_page(answer, 503, "try again")
    assert answer.headers["retry-after"] == "1"


async def test_a_store_outage_is_a_503_page() -> None:
    _, _, app = build(flow_store=BrokenFlows())
    async with _client(app) as client:
        ticket = "ag_ct_" + "0" * 43  # the right shape is enough: the store is asked
        ticket += _checksum(ticket)
        posted = await client.post(
            "/connect/crm", data={"ticket": ticket, "action": "connect"}, headers=SAME_ORIGIN
        )
        assert_page(posted, 503, "try again")
        callback = await client.get(
            "/connect/crm/callback", params={"state": "s" * 20 + "T" * 23, "code": "c"}
        )
        assert_page(callback, 503, "try again")


def _client(app: ConnectApp) -> httpx.AsyncClient:
    async def asgi(scope: Scope, receive: Any, send: Any) -> None:
        await mounted(app, scope, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=ORIGIN)


# --- strict parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "ticket=a&ticket=b",
        "state=a&state=b&code=c",
        "state=a&code=c&code=d",
        "error=access_denied&error=x",
        "state=%ff&code=c",
        "a" * 10,
        "&".join(f"p{i}=1" for i in range(40)),
    ],
)
async def test_a_query_read_two_ways_is_refused(rig: Rig, query: str) -> None:
    for path in ("/connect/crm", "/connect/crm/callback"):
        answer = await rig.client.get(f"{path}?{query}")
        assert_page(answer, 400)


async def test_a_form_body_over_4_kib_is_413(rig: Rig) -> None:
    body = {"action": "connect", "ticket": await rig.ticket(), "pad": "x" * 4096}
    answer = await rig.client.post("/connect/crm", data=body, headers=SAME_ORIGIN)
    assert_page(answer, 413)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"action=connect&action=disconnect", "application/x-www-form-urlencoded"),
        (b"action=connect", "application/json"),
        (b'{"action": "connect"}', "application/json"),
        (b"action=explode", "application/x-www-form-urlencoded"),
        (b"", "application/x-www-form-urlencoded"),
        (b"action=%ff", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_bad_form_is_a_400_page(rig: Rig, body: bytes, content_type: str) -> None:
    answer = await rig.client.post(
        "/connect/crm", content=body, headers={**SAME_ORIGIN, "content-type": content_type}
    )
    assert_page(answer, 400)


def test_read_query_and_cookie() -> None:
    scope = {
        "query_string": b"state=a%20b&code=c+d&iss=https%3A%2F%2Fv",
        "headers": [
            (b"cookie", b"x=1; agentguard_connect_crm=abc; agentguard_connect_crmx=no"),
            (b"cookie", b'agentguard_connect_crm="old"'),
        ],
    }
    assert read_query(scope) == {"state": "a b", "code": "c d", "iss": "https://v"}
    assert named_cookie(scope, "agentguard_connect_crm") == (["abc", "old"], 0)
    assert named_cookie({"headers": []}, "agentguard_connect_crm") == ([], 0)
    with pytest.raises(InvalidRequest):
        read_query({"query_string": "é".encode()})


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ([(b"origin", b"https://gw.example")], True),
        ([(b"sec-fetch-site", b"same-origin")], True),
        ([(b"origin", b"null"), (b"sec-fetch-site", b"same-origin")], True),
        ([(b"origin", b"https://gw.example"), (b"sec-fetch-site", b"cross-site")], False),
        ([(b"origin", b"https://evil.example"), (b"sec-fetch-site", b"same-origin")], False),
        ([(b"origin", b"https://gw.example.evil.example")], False),
        ([(b"origin", b"http://gw.example")], False),
        ([(b"origin", b"https://gw.example"), (b"origin", b"https://evil.example")], False),
        ([(b"sec-fetch-site", b"none")], False),
        ([(b"origin", b"null")], False),
        ([], False),
    ],
)
def test_same_origin(headers: list[tuple[bytes, bytes]], same: bool) -> None:
    assert is_same_origin({"headers": headers}, ORIGIN) is same


def test_pages_escape_what_they_show() -> None:
    page = confirm_page(
        '"><script>x</script>', "/c/<x>", 'a"onmouseover="b', "<u>", "<i>Eve</i>\n\x00"
    ).decode()
    assert "<script>" not in page and '"><' not in page.split("<main>")[1].split("<form")[0]
    assert 'value="a&quot;onmouseover=&quot;b"' in page and 'action="/c/&lt;x&gt;"' in page
    assert "<u>" not in page and "<i>" not in page and "\x00" not in page
    assert "&lt;u&gt; (&lt;i&gt;Eve&lt;/i&gt;)" in page
    shown = message_page("<t>", "<m>", "<h>").decode()
    assert "<t>" not in shown and "<m>" not in shown and "<h>" not in shown
    assert "&lt;m&gt;" in shown


# --- anything a browser can send -------------------------------------------------------------

_STORE, _FLOWS, _APP = build()
_PAGE_STATUSES = {200, 303, 400, 403, 404, 405, 413, 502}
_QUERY_ALPHABET = string.ascii_letters + string.digits + "%&=+;._~-ticketstatecodeerror\x00é "


def _call(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes):  # type: ignore[no-untyped-def]
    """One request straight to the app (raw bytes, no client normalising them)."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Any:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": "/connect" + path,
            "root_path": "/connect",
            "query_string": query,
            "headers": headers,
        }
        await _APP(scope, receive, send)

    anyio.run(run)
    start, body_message = sent
    return start["status"], dict(start["headers"]), body_message["body"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["/crm", "/crm/callback"]),
    st.one_of(
        st.binary(max_size=200),
        st.text(alphabet=_QUERY_ALPHABET, max_size=200).map(lambda t: t.encode("utf-8")),
        st.dictionaries(
            st.sampled_from(["ticket", "state", "code", "error", "iss", "x"]),
            st.text(max_size=60),
            max_size=5,
        ).map(lambda d: "&".join(f"{k}={quote(v)}" for k, v in d.items()).encode()),
    ),
    st.one_of(st.none(), st.text(alphabet=string.printable, max_size=80)),
)
def test_any_query_string_gets_a_page_never_a_500(
    path: str, query: bytes, cookie: str | None
) -> None:
    headers = [] if cookie is None else [(b"cookie", cookie.encode("latin-1", "replace"))]
    status, sent_headers, body = _call("GET", path, query, headers, b"")
    assert status in _PAGE_STATUSES
    assert sent_headers[b"content-type"] == b"text/html; charset=utf-8"
    assert body.startswith(b"<!DOCTYPE html>")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(["ticket", "action", "x"]),
            st.one_of(st.sampled_from(["connect", "disconnect"]), st.text(max_size=80)),
            max_size=4,
        ).map(lambda d: "&".join(f"{k}={quote(v)}" for k, v in d.items()).encode()),
    ),
    st.sampled_from(
        [
            b"application/x-www-form-urlencoded",
            b"application/x-www-form-urlencoded; charset=utf-8",
            b"text/plain",
            b"",
        ]
    ),
    st.booleans(),
)
def test_any_form_body_gets_a_page_never_a_500(
    body: bytes, content_type: bytes, same_origin: bool
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if same_origin:
        headers.append((b"origin", ORIGIN.encode()))
    status, sent_headers, answer = _call("POST", "/crm", b"", headers, body)
    assert sent_headers[b"cache-control"] == b"no-store"
    assert status in _PAGE_STATUSES
    if not same_origin:
        assert status == 403
    if status == 303:  # only a redeemed ticket gets this far, and random bodies carry none
        raise AssertionError("a random form body started an authorization")
    assert answer.startswith(b"<!DOCTYPE html>")
