"""Regressions from the security review of the connect pages (issue 21).

- HIGH: a connect link forwarded to someone else attached *their* vendor account to the link's
  user, because no page said whose link it was. The pages now name the user and warn; with the
  application's sign-in the link works only for its own user.
- MEDIUM: the callback ignored RFC 9207 ``iss``: a code from another authorization server was
  redeemed.
- LOW: every made-up ``state`` appended an audit event (and, for a well-formed one, cost a
  write transaction); a disabled user's link still connected; the binding cookie had no
  ``__Secure-`` prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from agentguard import Guard, ServiceConfig
from agentguard._model import Account, AccountStatus
from agentguard._redaction import install_log_redaction
from agentguard._secret import Secret
from agentguard.asgi import ConnectApp
from agentguard.asgi._types import Scope
from agentguard.connect import ConnectedAccounts, ConnectFlows, OAuthClientConfig, VendorTokens
from agentguard.connect._flow_errors import STATE_GONE, WRONG_BROWSER
from agentguard.connect._flow_tokens import generate_state
from agentguard.connect._vendor import VendorClient
from agentguard.credentials import KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeOAuthVendor, FaultyStore, make_user
from tests.connect.accounts_fakes import token

pytestmark = pytest.mark.anyio

install_log_redaction()  # httpx logs request URLs, which carry tickets and states

ORIGIN = "https://gw.example"
SAME_ORIGIN = {"origin": ORIGIN, "sec-fetch-site": "same-origin"}
ISSUER = "https://auth.crm.example"
CONFIG = OAuthClientConfig(
    client_id="agentguard-crm",
    authorization_endpoint=ISSUER + "/authorize",
    token_endpoint=ISSUER + "/token",
    issuer=ISSUER,
)


class CodeVendor:
    """Redeems any code; ``promised`` is what the vendor's metadata says of ``iss``."""

    def __init__(self, config: OAuthClientConfig = CONFIG, promised: bool | None = None) -> None:
        self.config = config
        self.exchanged: list[str] = []
        if promised is not None:
            self.expected_issuer = self._expected(promised)

    def _expected(self, promised: bool) -> Any:
        async def expected_issuer() -> tuple[str | None, bool]:
            return self.config.issuer, promised

        return expected_issuer

    async def authorization_url(self, *, redirect_uri: str, state: str, code_challenge: str) -> str:
        return ISSUER + "/authorize?client_id=agentguard-crm"

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str
    ) -> VendorTokens:
        self.exchanged.append(code)
        return VendorTokens(Secret(token("at")), Secret(token("rt")), None, ())


async def identify_by_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-session-user":
            return str(value.decode("ascii"))
    return None


@dataclass
class Rig:
    store: MemoryStore
    guard: Guard
    flows: ConnectFlows
    app: ConnectApp
    vendor: Any
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, source: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(source, 4711))
        made = httpx.AsyncClient(transport=transport, base_url=ORIGIN)
        self.clients.append(made)
        return made

    async def ticket(self, user: str = "alice") -> str:
        ticket, _ = await self.flows.issue_ticket("crm", user, by="op-test")
        return ticket.reveal()

    async def begin(self, user: str = "alice") -> tuple[str, dict[str, str]]:
        """A started authorization: its state and the browser's binding cookie."""
        started = await self.flows.begin("crm", user)
        cookie = {"cookie": f"{self.app.cookie_name('crm')}={started.browser_secret.reveal()}"}
        return started.state.reveal(), cookie

    async def refusals(self) -> list[dict[str, Any]]:
        return [
            e.event() for e in await self.store.read() if e.event()["action"] != "connection.link"
        ]

    async def connected(self, user: str = "alice") -> bool:
        return await self.store.get_connection("crm", user) is not None

    def counted(self) -> list[tuple[str, int, int]]:
        """The refusals counted for the summary (reason, status, count); taken."""
        summaries = self.guard.audit.summaries
        assert summaries is not None
        return [
            (str(e.reason), int(e.status or 0), int(e.detail["count"] or 0))
            for e in summaries.take(force=True)
        ]


async def build(
    vendor: Any | None = None,
    *,
    origin: str = ORIGIN,
    identify: Any = None,
    flow_store: Any = None,
    config: OAuthClientConfig = CONFIG,
) -> Rig:
    store = MemoryStore()
    await make_user(store, user_id="alice", grants="crm:write", name="Alice Liddell")
    await make_user(store, user_id="mallory", grants="crm:write")
    service = ServiceConfig(
        name="crm", base_url="https://api.crm.example", credentials="connected", oauth=config
    )
    guard = Guard(store, services=[service])
    keyring = KeyRing.generate()
    chosen: Any = vendor if vendor is not None else CodeVendor()
    flows = ConnectFlows(flow_store or store, keyring, audit=guard.audit)
    accounts = ConnectedAccounts(store, keyring, {"crm": chosen}, audit=guard.audit)
    app = ConnectApp(
        guard,
        flows=flows,
        accounts=accounts,
        vendors={"crm": chosen},
        public_origin=origin,
        identify=identify,
    )
    return Rig(store, guard, flows, app, chosen)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    made = await build()
    yield made
    for client in made.clients:
        await client.aclose()


# --- HIGH: whose link is it -------------------------------------------------------------------


async def test_confirm_page_names_the_user_the_link_binds(rig: Rig) -> None:
    """The reviewer's proof: mallory's link, opened by alice, says it is mallory's."""
    page = await rig.client().get("/crm", params={"ticket": await rig.ticket("mallory")})
    assert page.status_code == 200
    assert (
        "This link connects a crm account to agentguard user <strong>mallory</strong>. "
        "<strong>Continue only if you are mallory</strong>: whoever continues connects their own "
        "crm account to mallory, and mallory's agents will act with it."
    ) in page.text


async def test_the_page_gives_the_directory_name_and_the_connected_page_names_the_user(
    rig: Rig,
) -> None:
    client = rig.client()
    ticket = await rig.ticket("alice")
    page = await client.get("/crm", params={"ticket": ticket})
    assert "agentguard user <strong>alice (Alice Liddell)</strong>" in page.text
    started = await client.post(
        "/crm", data={"ticket": ticket, "action": "connect"}, headers=SAME_ORIGIN
    )
    assert started.status_code == 303
    state, cookie = await rig.begin("alice")
    done = await client.get(
        "/crm/callback", params={"state": state, "code": "c0de", "iss": ISSUER}, headers=cookie
    )
    assert done.status_code == 200, done.text
    assert "Your crm account is connected to agentguard user alice (Alice Liddell)" in done.text


async def test_with_a_sign_in_a_forwarded_link_is_refused_on_the_page_and_the_form() -> None:
    rig = await build(identify=identify_by_header)
    async with rig.client() as client:
        ticket = await rig.ticket("mallory")
        alice = {"x-session-user": "alice"}
        page = await client.get("/crm", params={"ticket": ticket}, headers=alice)
        assert page.status_code == 403 and "another user than the one signed in" in page.text
        posted = await client.post(
            "/crm", data={"ticket": ticket, "action": "connect"}, headers={**SAME_ORIGIN, **alice}
        )
        assert posted.status_code == 403 and "location" not in posted.headers
        mallory = {"x-session-user": "mallory"}  # the link's own user, signed in: accepted
        fresh = await rig.ticket("mallory")
        page = await client.get("/crm", params={"ticket": fresh}, headers=mallory)
        assert page.status_code == 200 and "<strong>mallory</strong>" in page.text
    assert not await rig.connected("mallory") and not await rig.connected("alice")


# --- MEDIUM: RFC 9207 iss ---------------------------------------------------------------------


async def test_rfc9207_iss_mismatch_in_callback_is_refused(rig: Rig) -> None:
    """The reviewer's proof: a code whose response names another issuer is not redeemed."""
    state, cookie = await rig.begin("alice")
    client = rig.client()
    answer = await client.get(
        "/crm/callback",
        params={"state": state, "code": "c0de", "iss": "https://evil.example"},
        headers=cookie,
    )
    assert answer.status_code == 403
    assert "did not come from crm&#x27;s own authorization server" in answer.text
    assert "evil.example" not in answer.text
    assert await rig.store.get_connection("crm", "alice") is None
    assert rig.vendor.exchanged == []
    assert "Max-Age=0" in answer.headers["set-cookie"]
    [event] = await rig.refusals()
    assert event["actor"]["user"] == "alice" and event["detail"] == {
        "step": "callback",
        "why": "issuer_mismatch",
    }
    assert "evil.example" not in repr(event)
    again = await client.get(
        "/crm/callback", params={"state": state, "code": "c0de", "iss": ISSUER}, headers=cookie
    )
    assert again.status_code == 403 and STATE_GONE in again.text  # the state is used up


@pytest.mark.parametrize(
    "iss", [ISSUER + "/", ISSUER.upper(), "https://auth.crm.example:443", ISSUER + " ", ""]
)
async def test_iss_must_equal_the_issuer_exactly(rig: Rig, iss: str) -> None:
    state, cookie = await rig.begin()
    answer = await rig.client().get(
        "/crm/callback", params={"state": state, "code": "c0de", "iss": iss}, headers=cookie
    )
    assert answer.status_code == 403
    assert not await rig.connected()


@pytest.mark.parametrize(
    ("promised", "iss", "connected", "why"),
    [
        (True, None, False, "issuer_missing"),
        (True, ISSUER, True, None),
        (False, None, True, None),
        (False, ISSUER, True, None),
        (False, "https://evil.example", False, "issuer_mismatch"),
        (None, None, True, None),  # a vendor object without expected_issuer: config.issuer
        (None, "https://evil.example", False, "issuer_mismatch"),
    ],
)
async def test_iss_is_required_only_when_the_metadata_promises_it(
    promised: bool | None, iss: str | None, connected: bool, why: str | None
) -> None:
    rig = await build(CodeVendor(promised=promised))
    state, cookie = await rig.begin()
    params = {"state": state, "code": "c0de"} | ({} if iss is None else {"iss": iss})
    async with rig.client() as client:
        answer = await client.get("/crm/callback", params=params, headers=cookie)
    assert (answer.status_code == 200) is connected, answer.text
    assert await rig.connected() is connected
    whys = [e["detail"]["why"] for e in await rig.refusals() if e["action"] == "connection.refuse"]
    assert whys == ([] if why is None else [why])


async def test_without_a_known_issuer_iss_is_not_compared() -> None:
    config = CONFIG.model_copy(update={"issuer": None})
    rig = await build(CodeVendor(config), config=config)
    state, cookie = await rig.begin()
    async with rig.client() as client:
        answer = await client.get(
            "/crm/callback",
            params={"state": state, "code": "c0de", "iss": "https://anything.example"},
            headers=cookie,
        )
    assert answer.status_code == 200 and await rig.connected()


async def test_a_discovering_client_requires_the_iss_its_vendor_promises() -> None:
    fake = FakeOAuthVendor(base_url="https://vendor.example", auto_approve="alice")
    config = fake.oauth_config(discovery=True)
    vendor = VendorClient(
        "crm", config, client_secret=fake.client_secret, transport=httpx.ASGITransport(app=fake)
    )
    rig = await build(vendor, config=config)
    async with rig.client() as client:
        for iss, expected in ((None, 403), ("https://vendor.example.evil", 403)):
            state, cookie = await rig.begin()
            params = {"state": state, "code": "c0de"} | ({} if iss is None else {"iss": iss})
            answer = await client.get("/crm/callback", params=params, headers=cookie)
            assert answer.status_code == expected, answer.text
        whys = [e["detail"]["why"] for e in await rig.refusals()]
        assert whys == ["issuer_missing", "issuer_mismatch"]
        # the real vendor, with its own iss: connected
        ticket = await rig.ticket("alice")
        started = await client.post(
            "/crm", data={"ticket": ticket, "action": "connect"}, headers=SAME_ORIGIN
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as browser:
            back = await browser.get(started.headers["location"])
        callback = back.headers["location"]
        assert "iss=" in callback
        cookie = {"cookie": started.headers["set-cookie"].split(";")[0]}
        done = await client.get(callback.replace(ORIGIN + "/connect", ""), headers=cookie)
        assert done.status_code == 200, done.text
    await vendor.aclose()
    assert await rig.connected()


async def test_a_vendor_error_naming_another_issuer_is_not_reported_as_the_vendors(
    rig: Rig,
) -> None:
    state, cookie = await rig.begin()
    answer = await rig.client().get(
        "/crm/callback",
        params={"state": state, "error": "access_denied", "iss": "https://evil.example"},
        headers=cookie,
    )
    assert answer.status_code == 403 and "own authorization server" in answer.text
    [event] = await rig.refusals()
    assert event["detail"] == {"step": "authorize", "why": "issuer_mismatch"}


# --- LOW: disabled users ----------------------------------------------------------------------


async def _make_unfit(store: MemoryStore, problem: str) -> str:
    """A user who may not connect now; returns the expected reason."""
    if problem == "disabled":
        user = await store.get_user("alice")
        assert user is not None
        await store.put_user(user.model_copy(update={"enabled": False}))
        return "user_disabled"
    if problem == "closed":
        await store.put_account(Account(id="acct-1", status=AccountStatus.CLOSED))
        return "account_closed"
    return "unknown_user"


PROBLEMS = ["disabled", "closed", "deleted"]


@pytest.mark.parametrize("problem", PROBLEMS)
async def test_a_link_of_a_user_who_may_not_connect_is_refused(rig: Rig, problem: str) -> None:
    user = "ghost" if problem == "deleted" else "alice"
    ticket = await rig.ticket(user)
    reason = await _make_unfit(rig.store, problem)
    client = rig.client()
    page = await client.get("/crm", params={"ticket": ticket})
    assert page.status_code == 403 and "nothing can be connected" in page.text
    assert 'name="ticket"' not in page.text
    posted = await client.post(
        "/crm", data={"ticket": ticket, "action": "connect"}, headers=SAME_ORIGIN
    )
    assert posted.status_code == 403 and "location" not in posted.headers
    events = await rig.refusals()  # the form used the link up: its own event
    assert [(e["reason"], e["actor"]["user"], e["detail"]["step"]) for e in events] == [
        (reason, user, "post"),
    ]
    assert rig.counted() == [(reason, 403, 1)]  # the page used nothing up: counted


@pytest.mark.parametrize("problem", PROBLEMS[:2])
async def test_a_user_disabled_while_at_the_vendor_connects_nothing(rig: Rig, problem: str) -> None:
    state, cookie = await rig.begin("alice")
    reason = await _make_unfit(rig.store, problem)
    answer = await rig.client().get(
        "/crm/callback", params={"state": state, "code": "c0de", "iss": ISSUER}, headers=cookie
    )
    assert answer.status_code == 403 and "nothing can be connected" in answer.text
    assert "Max-Age=0" in answer.headers["set-cookie"]
    assert rig.vendor.exchanged == []  # the code was never redeemed
    assert not await rig.connected()
    [event] = await rig.refusals()
    assert (event["reason"], event["detail"]["step"]) == (reason, "callback")


@pytest.mark.parametrize("problem", PROBLEMS)
async def test_a_signed_in_user_who_may_not_connect_is_refused(problem: str) -> None:
    rig = await build(identify=identify_by_header)
    user = "ghost" if problem == "deleted" else "alice"
    reason = await _make_unfit(rig.store, problem)
    session = {"x-session-user": user}
    async with rig.client() as client:
        page = await client.get("/crm", headers=session)
        posted = await client.post(
            "/crm", data={"action": "connect"}, headers={**SAME_ORIGIN, **session}
        )
    assert page.status_code == posted.status_code == 403
    assert "location" not in posted.headers
    # neither used anything up (no link): counted, or a signed-in user could grow the log
    assert await rig.refusals() == []
    assert rig.counted() == [(reason, 403, 2)]


# --- LOW: the binding cookie ------------------------------------------------------------------


async def test_on_https_the_binding_cookie_is_host_prefixed_and_only_that_name_binds(
    rig: Rig,
) -> None:
    client = rig.client()
    started = await client.post(
        "/crm", data={"ticket": await rig.ticket(), "action": "connect"}, headers=SAME_ORIGIN
    )
    cookie = started.headers["set-cookie"]
    assert cookie.startswith("__Host-agentguard_connect_crm=") and "; Secure" in cookie
    assert "Path=/;" in cookie and "domain" not in cookie.lower()
    state, secure_cookie = await rig.begin()
    value = secure_cookie["cookie"].split("=", 1)[1]
    # the right secret under names a sibling host could set (no __Host- prefix)
    answer = await client.get(
        "/crm/callback",
        params={"state": state, "code": "c0de", "iss": ISSUER},
        headers={
            "cookie": f"agentguard_connect_crm={value}; __Secure-agentguard_connect_crm={value}"
        },
    )
    assert answer.status_code == 403 and WRONG_BROWSER in answer.text
    state, secure_cookie = await rig.begin()
    done = await client.get(
        "/crm/callback",
        params={"state": state, "code": "c0de", "iss": ISSUER},
        headers=secure_cookie,
    )
    assert done.status_code == 200, done.text


async def test_on_plain_http_the_cookie_keeps_its_plain_name() -> None:
    rig = await build(origin="http://127.0.0.1:8080")
    assert rig.app.cookie_name("crm") == "agentguard_connect_crm"
    assert rig.app._cookie("crm", None).startswith("agentguard_connect_crm=;")


# --- LOW: unauthenticated write amplification -------------------------------------------------


async def test_made_up_states_are_counted_per_source_and_malformed_ones_never_looked_up() -> None:
    flow_store = FaultyStore(MemoryStore())
    rig = await build(flow_store=flow_store)
    sources = {"198.51.100.7": 40, "203.0.113.9": 25}
    for source, times in sources.items():
        async with rig.client(source) as client:
            for n in range(times):
                state = generate_state().reveal() if n % 2 else "x" * (n + 1)
                answer = await client.get("/crm/callback", params={"state": state, "code": "c"})
                assert answer.status_code == 403
            vendor_error = await client.get("/crm/callback", params={"error": "access_denied"})
            assert vendor_error.status_code == 403
    assert flow_store.calls["take_flow"] == 20 + 12  # only the well-formed ones
    assert await rig.store.read() == []  # nothing appended yet, for 67 refusals
    assert await rig.guard.audit.flush() == 2
    events: list[dict[str, Any]] = [e.event() for e in await rig.store.read()]
    summaries = {e["detail"]["source"]: e["detail"]["count"] for e in events}
    assert summaries == {"198.51.100.7": 41, "203.0.113.9": 26}


async def test_a_refusal_about_a_real_flow_is_still_its_own_event(rig: Rig) -> None:
    state, _ = await rig.begin("alice")
    answer = await rig.client().get("/crm/callback", params={"state": state, "code": "c"})
    assert answer.status_code == 403 and WRONG_BROWSER in answer.text
    [event] = await rig.refusals()
    assert event["actor"]["user"] == "alice" and event["detail"]["why"] == "no_browser_cookie"
