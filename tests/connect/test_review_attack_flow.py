"""Regressions from the attack round on the connect pages (issue 21), over real sockets.

- MEDIUM, login CSRF by cookie tossing: the binding cookie could be planted by a sibling host
  (``Domain=``) and the callback took the first cookie of its name, so a victim lured to the
  attacker's authorization URL finished the attacker's flow with her own vendor account. On
  https the cookie is now ``__Host-agentguard_connect_{service}`` (no other host can set one),
  and a callback carrying the cookie twice is refused.
- LOW, audit gaps: unreadable or incomplete callbacks and bad forms were refused unaudited, and
  vendor errors were audited 403 whatever the page answered.
- LOW, slowloris: the form's body was awaited without a deadline (now 408).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import Guard, ServiceConfig
from agentguard._redaction import install_log_redaction
from agentguard.asgi import ConnectApp
from agentguard.connect import ConnectedAccounts, ConnectFlows
from agentguard.connect._flow_errors import COOKIE_AMBIGUOUS, WRONG_BROWSER
from agentguard.connect._flow_tokens import generate_state
from agentguard.connect._vendor import VendorClient
from agentguard.credentials import KeyRing
from agentguard.errors import ConfigurationError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeOAuthVendor, make_user
from tests.support.servers import LoopbackServer, free_port

install_log_redaction()  # httpx logs request URLs, which carry tickets, states and codes

SECURE_ORIGIN = "https://gw.example"
SERVICES = ("crm", "calendar")
HOST_COOKIE = "__Host-agentguard_connect_{service}"
PLAIN_COOKIE = "agentguard_connect_{service}"


@dataclass
class Rig:
    url: str
    """Where the socket listens."""
    origin: str
    """The public origin browsers see (https for the cookie-tossing tests)."""
    store: MemoryStore
    guard: Guard
    flows: ConnectFlows
    vendor: FakeOAuthVendor

    async def ticket(self, user: str, service: str = "crm") -> str:
        ticket, _ = await self.flows.issue_ticket(service, user, by="op-test")
        return ticket.reveal()

    def local(self, url: str) -> str:
        """``url`` of the public origin, as the socket serves it."""
        return url.replace(self.origin, self.url, 1)

    async def start(
        self, http: httpx.AsyncClient, user: str, service: str = "crm"
    ) -> httpx.Response:
        """Press Connect on ``user``'s link: the 303 to the vendor (and the cookie)."""
        form = {"ticket": await self.ticket(user, service), "action": "connect"}
        answer = await http.post(
            f"{self.url}/connect/{service}",
            data=form,
            headers={"origin": self.origin, "sec-fetch-site": "same-origin"},
        )
        assert answer.status_code == 303, answer.text
        return answer

    async def consent(self, http: httpx.AsyncClient, location: str, vendor_user: str) -> str:
        """``vendor_user`` approves at the vendor: the callback URL, as the socket serves it."""
        self.vendor.auto_approve = vendor_user
        answer = await http.get(location)
        assert answer.status_code == 302, answer.text
        back: str = answer.headers["location"]
        assert back.startswith(f"{self.origin}/connect/")
        return self.local(back)

    async def connected(self, user: str, service: str = "crm") -> bool:
        return await self.store.get_connection(service, user) is not None

    async def refusals(self) -> list[dict[str, Any]]:
        events = [entry.event() for entry in await self.store.read()]
        return [e for e in events if e["action"] == "connection.refuse"]

    def counted(self) -> list[tuple[int, str, str, int]]:
        """The refusals counted for the summary (status, reason, source, count); taken."""
        summaries = self.guard.audit.summaries
        assert summaries is not None
        return [
            (
                int(e.status or 0),
                str(e.reason),
                str(e.detail["source"]),
                int(e.detail["count"] or 0),
            )
            for e in summaries.take(force=True)
        ]


async def _seed(store: MemoryStore) -> None:
    for user in ("alice", "bob", "mallory"):
        await make_user(store, user_id=user, grants="crm:write calendar:write")


@contextmanager
def serve(origin: str | None = None, **options: float) -> Iterator[Rig]:
    """The connect pages of two connected services under uvicorn, in front of a fake vendor;
    ``origin`` the public origin (default: the socket's own http origin)."""
    vendor = FakeOAuthVendor(users=("alice-crm", "mallory-crm"))
    with LoopbackServer(vendor) as vendor_server:
        vendor.bind(vendor_server.url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        public = origin or url
        config = vendor.oauth_config()
        services = [
            ServiceConfig(
                name=name,
                base_url=vendor.api_url,
                allow_insecure_http=True,
                credentials="connected",
                oauth=config,
            )
            for name in SERVICES
        ]
        store = MemoryStore()
        anyio.run(_seed, store)
        guard = Guard(store, services=services)
        keyring = KeyRing.generate()
        vendors = {
            name: VendorClient(name, config, client_secret=vendor.client_secret, timeout=5)
            for name in SERVICES
        }
        flows = ConnectFlows(store, keyring, audit=guard.audit)
        accounts = ConnectedAccounts(store, keyring, vendors, audit=guard.audit)
        connect = ConnectApp(
            guard,
            flows=flows,
            accounts=accounts,
            vendors=vendors,
            public_origin=public,
            **options,  # type: ignore[arg-type]
        )

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            for client in vendors.values():
                await client.aclose()

        app = Starlette(routes=[Mount("/connect", app=connect)], lifespan=lifespan)
        with LoopbackServer(app, port=port, lifespan="on"):
            yield Rig(url, public, store, guard, flows, vendor)


@pytest.fixture
def secure() -> Iterator[Rig]:
    """Public origin https (the socket itself is plain http on loopback)."""
    with serve(SECURE_ORIGIN) as rig:
        yield rig


@pytest.fixture
def plain() -> Iterator[Rig]:
    with serve(body_idle=0.5, body_total=2.0) as rig:
        yield rig


def _set_cookie(answer: httpx.Response) -> tuple[str, str, set[str]]:
    """The one Set-Cookie of ``answer``: name, value and attributes."""
    [header] = answer.headers.get_list("set-cookie")
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    return name, value, set(attributes)


# --- MEDIUM: login CSRF by cookie tossing -----------------------------------------------------


@pytest.mark.anyio
async def test_on_https_the_binding_cookie_is_one_no_other_host_can_set(secure: Rig) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        started = await secure.start(http, "alice")
    name, value, attributes = _set_cookie(started)
    assert name == HOST_COOKIE.format(service="crm") and len(value) == 43
    # RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain, or a browser drops a __Host- cookie
    assert attributes == {"Max-Age=600", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"}


@pytest.mark.anyio
async def test_a_tossed_cookie_does_not_let_the_victim_finish_the_attackers_flow(
    secure: Rig,
) -> None:
    # mallory, an agentguard user, starts a flow with his own link in his own browser
    async with httpx.AsyncClient(timeout=10) as attacker:
        started = await secure.start(attacker, "mallory")
    _, secret, _ = _set_cookie(started)
    # alice, signed in at the vendor, is lured to mallory's authorization URL; her browser
    # carries mallory's binding secret under every name a sibling host can plant (anything but
    # __Host-; browsers may accept other letter cases of the prefix from a sibling)
    tossable = (
        PLAIN_COOKIE.format(service="crm"),
        "__Secure-agentguard_connect_crm",
        "__host-agentguard_connect_crm",
        "agentguard_connect",
        "__Secure-agentguard_connect",
    )
    async with httpx.AsyncClient(timeout=10) as victim:
        back = await secure.consent(victim, started.headers["location"], "alice-crm")
        cookies = "; ".join(f"{name}={secret}" for name in tossable)
        finished = await victim.get(back, headers={"cookie": cookies})
    assert finished.status_code == 403 and WRONG_BROWSER in finished.text
    assert not await secure.connected("mallory")
    assert secure.vendor.token_calls == 0  # alice's authorization code was never redeemed
    [refused] = await secure.refusals()
    assert (refused["actor"]["user"], refused["detail"]["why"]) == ("mallory", "no_browser_cookie")


@pytest.mark.anyio
async def test_one_browser_keeps_two_services_flows_apart(secure: Rig) -> None:
    jar: dict[str, str] = {}  # what the browser holds for the https origin (all Path=/)
    locations = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for service in SERVICES:
            started = await secure.start(http, "alice", service)
            name, value, _ = _set_cookie(started)
            jar[name] = value
            locations[service] = started.headers["location"]
        assert sorted(jar) == sorted(HOST_COOKIE.format(service=s) for s in SERVICES)
        for service in SERVICES:  # each callback carries both cookies (Path=/)
            back = await secure.consent(http, locations[service], "alice-crm")
            cookies = "; ".join(f"{name}={value}" for name, value in jar.items())
            done = await http.get(back, headers={"cookie": cookies})
            assert done.status_code == 200, done.text
            name, value, attributes = _set_cookie(done)  # clears its own cookie only
            assert (name, value) == (HOST_COOKIE.format(service=service), "")
            assert {"Max-Age=0", "Path=/", "Secure"} <= attributes
            del jar[name]
    assert await secure.connected("alice", "crm") and await secure.connected("alice", "calendar")


@pytest.mark.anyio
async def test_a_callback_with_the_binding_cookie_twice_is_refused(plain: Rig) -> None:
    """Plain http has no defence against a tossed cookie by itself; a tossed cookie next to
    the browser's own (another path) is refused, whichever of them is the state's."""
    cookie = PLAIN_COOKIE.format(service="crm")
    async with (
        httpx.AsyncClient(timeout=10) as victim,
        httpx.AsyncClient(timeout=10) as attacker,
    ):
        await plain.start(victim, "alice")  # her own cookie, Path=/connect/crm
        started = await plain.start(attacker, "mallory")
        mallory_secret = attacker.cookies[cookie]
        # a sibling plants mallory's cookie for a longer path: sent first (RFC 6265 §5.4)
        victim.cookies.set(cookie, mallory_secret, domain="127.0.0.1", path="/connect/crm/callback")
        back = await plain.consent(victim, started.headers["location"], "alice-crm")
        sent = await victim.get(back)
        assert sent.request.headers["cookie"].count(f"{cookie}=") == 2
    assert sent.status_code == 403 and COOKIE_AMBIGUOUS in sent.text
    assert "set-cookie" not in sent.headers
    assert not await plain.connected("mallory") and plain.vendor.token_calls == 0
    assert await plain.refusals() == []  # names no one: counted per address
    assert plain.counted() == [(403, "connect_refused", "127.0.0.1", 1)]


# --- LOW: every refusal audited, with the status sent ----------------------------------------

BAD_CALLBACKS = [
    "state=" + generate_state().reveal(),  # no code
    "code=c0de",  # no state
    "state=x&state=y&code=z",  # a parameter twice
    "code=%ff&state=s",  # not UTF-8
    "&".join(f"p{i}=1" for i in range(40)),  # too many fields
]


@pytest.mark.anyio
@pytest.mark.parametrize("query", BAD_CALLBACKS)
async def test_every_refused_callback_is_counted(plain: Rig, query: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{plain.url}/connect/crm/callback?{query}")
    assert answer.status_code == 400
    assert plain.counted() == [(400, "malformed_request", "127.0.0.1", 1)]
    assert await plain.refusals() == []


FORM = "application/x-www-form-urlencoded"
BAD_FORMS = [
    ("text/plain", b"action=connect&ticket=x", 400),
    (FORM, b"action=connect&action=connect", 400),
    (FORM, b"action=steal", 400),
    (FORM, b"action=%ff", 400),
    (FORM, b"a=" + b"x" * 10000, 413),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("content_type", "body", "status"), BAD_FORMS)
async def test_every_refused_form_is_counted(
    plain: Rig, content_type: str, body: bytes, status: int
) -> None:
    headers = {"origin": plain.origin, "content-type": content_type}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{plain.url}/connect/crm", content=body, headers=headers)
    assert answer.status_code == status
    assert plain.counted() == [(status, "malformed_request", "127.0.0.1", 1)]
    assert await plain.refusals() == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status"), [("access_denied", 403), ("invalid_scope", 400), ("server_error", 502)]
)
async def test_a_vendor_error_is_audited_with_the_status_the_page_answered(
    plain: Rig, error: str, status: int
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        stateless = await http.get(f"{plain.url}/connect/crm/callback?error={error}")
        assert stateless.status_code == status
        assert plain.counted() == [(status, "connect_refused", "127.0.0.1", 1)]
        started = await plain.start(http, "alice")  # a real flow, in this browser
        plain.vendor.fail_next("authorize", 302, error)
        back = await plain.consent(http, started.headers["location"], "alice-crm")
        answer = await http.get(back)
    assert answer.status_code == status
    [refused] = await plain.refusals()
    assert (refused["actor"]["user"], refused["status"]) == ("alice", status)
    assert refused["detail"]["vendor_error"] == error


@pytest.mark.anyio
async def test_a_vendor_error_with_a_refused_state_answers_that_refusal(plain: Rig) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        started = await plain.start(http, "alice")
        plain.vendor.fail_next("authorize", 302, "server_error")
        back = await plain.consent(http, started.headers["location"], "alice-crm")
    async with httpx.AsyncClient(timeout=10) as elsewhere:  # not the browser that started
        answer = await elsewhere.get(back)
    assert answer.status_code == 403 and WRONG_BROWSER in answer.text
    [refused] = await plain.refusals()
    assert refused["status"] == 403 and refused["detail"]["why"] == "no_browser_cookie"


# --- LOW: a stalled form ---------------------------------------------------------------------


def _post_head(rig: Rig, length: int = 4000) -> bytes:
    host = rig.url.split("//", 1)[1]
    return (
        f"POST /connect/crm HTTP/1.1\r\nHost: {host}\r\nOrigin: {rig.origin}\r\n"
        f"Content-Type: {FORM}\r\nContent-Length: {length}\r\n\r\naction="
    ).encode()


def _answer(sock: socket.socket, within: float) -> bytes:
    sock.settimeout(within)
    try:
        return sock.recv(64)
    except TimeoutError:
        return b"(no answer)"


def test_stalled_forms_are_answered_408_after_the_idle_deadline(plain: Rig) -> None:
    host, port = plain.url.split("//", 1)[1].split(":")
    stalled = [socket.create_connection((host, int(port))) for _ in range(20)]
    try:
        began = time.monotonic()
        for sock in stalled:
            sock.sendall(_post_head(plain))
        answers = [_answer(sock, 5.0) for sock in stalled]
        elapsed = time.monotonic() - began
    finally:
        for sock in stalled:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
    assert 0.4 < elapsed < 4.0
    assert plain.counted() == [(408, "request_body_timeout", "127.0.0.1", 20)]


def test_a_trickled_form_is_answered_408_after_the_total_deadline(plain: Rig) -> None:
    host, port = plain.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as sock:
        began = time.monotonic()
        sock.sendall(_post_head(plain))
        sock.settimeout(0.2)
        answer = b""
        while not answer and time.monotonic() - began < 6.0:
            try:
                sock.sendall(b"x")  # one byte each 0.2 s: never idle for 0.5 s
                answer = sock.recv(64)
            except TimeoutError:
                continue
            except OSError:  # answered and closed while a byte was on its way
                answer = _answer(sock, 1.0)
                break
        elapsed = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 1.9 < elapsed < 4.0
    assert plain.counted() == [(408, "request_body_timeout", "127.0.0.1", 1)]


def test_the_form_deadlines_default_to_10_and_30_seconds_and_must_be_positive() -> None:
    store = MemoryStore()
    vendor = FakeOAuthVendor(base_url="http://vendor.test")
    config = vendor.oauth_config()
    service = ServiceConfig(
        name="crm",
        base_url=vendor.api_url,
        allow_insecure_http=True,
        credentials="connected",
        oauth=config,
    )
    guard = Guard(store, services=[service])
    keyring = KeyRing.generate()
    client = VendorClient("crm", config, client_secret=vendor.client_secret)
    parts: dict[str, Any] = {
        "flows": ConnectFlows(store, keyring),
        "accounts": ConnectedAccounts(store, keyring, {"crm": client}),
        "vendors": {"crm": client},
        "public_origin": SECURE_ORIGIN,
    }
    app = ConnectApp(guard, **parts)
    assert (app.body_idle, app.body_total) == (10.0, 30.0)
    with pytest.raises(ConfigurationError):
        ConnectApp(guard, **parts, body_idle=0.0)
    with pytest.raises(ConfigurationError):
        ConnectApp(guard, **parts, body_total=-1.0)
