"""ConnectFlows: connect-link tickets and OAuth states are random, stored as hashes only, single
use, bound to their service (and a state to its browser), and every refusal is audited."""

from __future__ import annotations

import base64
import hashlib
import re
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard._model import ConnectFlow, FlowKind
from agentguard.audit import AuditWriter
from agentguard.connect import ConnectFlows
from agentguard.connect._flow_errors import (
    LINK_GONE,
    LINK_MALFORMED,
    LINK_OTHER_SERVICE,
    STATE_GONE,
    STATE_OTHER_SERVICE,
    STATE_UNREADABLE,
    WRONG_BROWSER,
    ConnectRefused,
)
from agentguard.connect._flow_tokens import (
    TICKET_LENGTH,
    TICKET_PREFIX,
    generate_state,
    is_state,
    is_ticket,
)
from agentguard.credentials import KeyRing
from agentguard.errors import StoreUnavailable, UsageError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio

UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


class RecordingStore(MemoryStore):
    """A MemoryStore that keeps every flow record it was given, as written."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.written: list[ConnectFlow] = []
        self.takes = 0
        self.peeks = 0

    async def put_flow(self, record: ConnectFlow) -> None:
        self.written.append(record)
        await super().put_flow(record)

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        self.takes += 1
        return await super().take_flow(token_hash, kind=kind, now=now)

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        self.peeks += 1
        return await super().peek_flow(token_hash, kind=kind, now=now)


class BrokenStore(MemoryStore):
    async def put_flow(self, record: ConnectFlow) -> None:
        raise ConnectionResetError("db gone")

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        raise ConnectionResetError("db gone")

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        raise ConnectionResetError("db gone")


@dataclass
class Setup:
    clock: FakeClock
    store: RecordingStore
    keyring: KeyRing
    flows: ConnectFlows

    async def events(self, action: str) -> list[dict[str, Any]]:
        return [e.event() for e in await self.store.read() if e.event()["action"] == action]


@pytest.fixture
def setup() -> Setup:
    clock = FakeClock()
    store = RecordingStore(clock=clock)
    keyring = KeyRing.generate("kek-a")
    flows = ConnectFlows(store, keyring, clock=clock, audit=AuditWriter(store))
    return Setup(clock, store, keyring, flows)


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


# --- tickets ---------------------------------------------------------------------------------


async def test_a_ticket_has_the_key_shape_and_only_its_hash_is_stored(setup: Setup) -> None:
    ticket, record = await setup.flows.issue_ticket("crm", "alice", by="op-jane")
    value = ticket.reveal()
    assert value.startswith(TICKET_PREFIX) and len(value) == TICKET_LENGTH
    assert re.fullmatch(r"ag_ct_[0-9A-Za-z]{49}", value) and is_ticket(value)
    assert value not in repr(ticket) and value not in repr(record)
    [stored] = setup.store.written
    assert stored == record and stored.kind is FlowKind.TICKET
    assert stored.token_hash == sha256(value)
    assert all(value not in repr(v) for v in stored.model_dump().values())
    assert (stored.service, stored.user_id, stored.created_by) == ("crm", "alice", "op-jane")
    assert stored.expires_at - stored.created_at == timedelta(minutes=15)
    assert stored.browser_hash is None and stored.verifier is None


async def test_two_tickets_differ(setup: Setup) -> None:
    first, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    second, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    assert first.reveal() != second.reveal()


@pytest.mark.parametrize("position", [0, 3, 6, 30, 48, 54])
async def test_a_mistyped_ticket_fails_its_checksum_before_any_lookup(
    setup: Setup, position: int
) -> None:
    ticket, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    value = ticket.reveal()
    swapped = "B" if value[position] != "B" else "C"
    typo = value[:position] + swapped + value[position + 1 :]
    assert not is_ticket(typo)
    with pytest.raises(ConnectRefused) as refused:
        await setup.flows.redeem_ticket(typo, service="crm")
    assert refused.value.description == LINK_MALFORMED
    assert setup.store.takes == 0


async def test_the_link_is_audited_without_the_ticket(setup: Setup) -> None:
    ticket, record = await setup.flows.issue_ticket("crm", "alice", by="op-jane")
    [event] = await setup.events("connection.link")
    assert event["service"] == "crm" and event["actor"]["user"] == "alice"
    assert event["detail"]["flow_id"] == record.id and event["detail"]["by"] == "op-jane"
    assert ticket.reveal() not in repr(event)


async def test_a_ticket_is_used_once(setup: Setup) -> None:
    ticket, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    flow = await setup.flows.redeem_ticket(ticket.reveal(), service="crm")
    assert (flow.user_id, flow.service, flow.kind) == ("alice", "crm", FlowKind.TICKET)
    with pytest.raises(ConnectRefused) as again:
        await setup.flows.redeem_ticket(ticket.reveal(), service="crm")
    assert again.value.description == LINK_GONE
    assert again.value.status == 403 and again.value.error == "access_denied"
    assert again.value.reason.value == "connect_refused"


async def test_unknown_used_and_expired_tickets_read_the_same(setup: Setup) -> None:
    used, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    await setup.flows.redeem_ticket(used.reveal(), service="crm")
    expired, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    unknown = ConnectFlows(MemoryStore(), KeyRing.generate())  # a ticket this store never saw
    never, _ = await unknown.issue_ticket("crm", "alice", by="cli")
    setup.clock.advance(timedelta(minutes=15))
    answers = []
    for ticket in (used, expired, never):
        with pytest.raises(ConnectRefused) as refused:
            await setup.flows.redeem_ticket(ticket.reveal(), service="crm")
        answers.append(refused.value.to_http())
    assert answers[0] == answers[1] == answers[2]
    assert refused.value.description == LINK_GONE


async def test_a_ticket_just_before_its_expiry_still_works(setup: Setup) -> None:
    ticket, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    setup.clock.advance(timedelta(minutes=15) - timedelta(microseconds=1))
    assert (await setup.flows.redeem_ticket(ticket.reveal(), service="crm")).user_id == "alice"


async def test_a_ticket_for_another_service_is_refused_and_used_up(setup: Setup) -> None:
    ticket, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    with pytest.raises(ConnectRefused) as refused:
        await setup.flows.redeem_ticket(ticket.reveal(), service="calendar")
    assert refused.value.description == LINK_OTHER_SERVICE
    assert refused.value.user_id == "alice"
    with pytest.raises(ConnectRefused, match="already used"):
        await setup.flows.redeem_ticket(ticket.reveal(), service="crm")


async def test_refusals_are_audited_with_service_user_and_why(setup: Setup) -> None:
    ticket, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    for service in ("calendar", "crm"):
        with pytest.raises(ConnectRefused):
            await setup.flows.redeem_ticket(ticket.reveal(), service=service)
    with pytest.raises(ConnectRefused):
        await setup.flows.redeem_ticket("ag_ct_nonsense", service="crm")
    events = await setup.events("connection.refuse")
    seen = [(e["service"], e["actor"]["user"], e["detail"]["why"]) for e in events]
    assert seen == [
        ("calendar", "alice", "other_service"),
        ("crm", None, "unknown_or_used"),
        ("crm", None, "malformed"),
    ]
    assert all(e["reason"] == "connect_refused" and e["decision"] == "deny" for e in events)
    assert all(e["status"] == 403 for e in events)
    assert ticket.reveal() not in repr(events)


async def test_inspecting_a_ticket_reads_it_and_leaves_it(setup: Setup) -> None:
    ticket, record = await setup.flows.issue_ticket("crm", "alice", by="cli")
    for _ in range(3):  # a mail scanner, a link preview, the person
        assert await setup.flows.inspect_ticket(ticket.reveal(), service="crm") == record
    assert (setup.store.peeks, setup.store.takes) == (3, 0)
    assert await setup.flows.redeem_ticket(ticket.reveal(), service="crm") == record
    with pytest.raises(ConnectRefused) as gone:
        await setup.flows.inspect_ticket(ticket.reveal(), service="crm")
    assert gone.value.description == LINK_GONE


async def test_inspecting_refuses_what_redeeming_refuses_in_the_same_words(setup: Setup) -> None:
    expired, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    unknown, _ = await ConnectFlows(MemoryStore(), KeyRing.generate()).issue_ticket(
        "crm", "alice", by="cli"
    )
    setup.clock.advance(timedelta(minutes=15) - timedelta(microseconds=1))
    kept, _ = await setup.flows.issue_ticket("calendar", "bob", by="cli")
    setup.clock.advance(timedelta(microseconds=1))  # ``expired`` ends now
    presented = ("ag_ct_nonsense", unknown.reveal(), expired.reveal(), kept.reveal())
    inspected: list[tuple[str, object]] = []
    redeemed: list[tuple[str, object]] = []
    for value in presented:
        for act, answers in (
            (setup.flows.inspect_ticket, inspected),
            (setup.flows.redeem_ticket, redeemed),
        ):
            with pytest.raises(ConnectRefused) as refused:
                await act(value, service="crm")
            answers.append((refused.value.description, refused.value.to_http()))
    assert inspected == redeemed
    assert [d for d, _ in inspected] == [LINK_MALFORMED, LINK_GONE, LINK_GONE, LINK_OTHER_SERVICE]
    events = await setup.events("connection.refuse")
    steps = [(e["detail"]["step"], e["detail"]["why"], e["actor"]["user"]) for e in events]
    assert steps == [
        ("link", "malformed", None),
        ("ticket", "malformed", None),
        ("link", "unknown_or_used", None),
        ("ticket", "unknown_or_used", None),
        ("link", "unknown_or_used", None),
        ("ticket", "unknown_or_used", None),
        ("link", "other_service", "bob"),
        ("ticket", "other_service", "bob"),
    ]


async def test_refusals_that_name_no_one_are_counted_not_appended() -> None:
    from agentguard.audit._aggregate import RefusalSummaries, RefusalSummaryPolicy

    clock = FakeClock()
    store = RecordingStore(clock=clock)
    audit = AuditWriter(store, summaries=RefusalSummaries(RefusalSummaryPolicy(), clock))
    flows = ConnectFlows(store, KeyRing.generate(), clock=clock, audit=audit)
    made_up = [generate_state().reveal() for _ in range(50)]
    for state in [*made_up, "not-a-state", "x" * 500]:
        with pytest.raises(ConnectRefused):
            await flows.complete(state, service="crm", browser_secret=None, source="198.51.100.7")
    for ticket in ("ag_ct_nonsense", (await _any_ticket()).reveal()):
        with pytest.raises(ConnectRefused):
            await flows.inspect_ticket(ticket, service="crm", source="198.51.100.7")
    assert store.takes == 50  # the malformed ones never reached the store
    # a refusal about a real flow is still its own event
    auth = await flows.begin("crm", "alice")
    with pytest.raises(ConnectRefused):
        await flows.complete(auth.state.reveal(), service="crm", browser_secret="stolen")
    entries: list[dict[str, Any]] = [e.event() for e in await store.read()]
    assert [(e["action"], e["actor"]["user"]) for e in entries] == [("connection.refuse", "alice")]
    assert await audit.flush() == 1
    summary: dict[str, Any] = (await store.read())[-1].event()
    assert summary["action"] == "guard.refusal_summary" and summary["service"] == "crm"
    assert summary["reason"] == "connect_refused" and summary["status"] == 403
    assert summary["detail"]["source"] == "198.51.100.7" and summary["detail"]["count"] == 54


async def test_bad_names_are_a_usage_error(setup: Setup) -> None:
    with pytest.raises(UsageError):
        await setup.flows.issue_ticket("crm", "bad user", by="cli")
    with pytest.raises(UsageError):
        await setup.flows.begin("", "alice")
    assert setup.store.written == []


# --- states ----------------------------------------------------------------------------------


async def test_begin_keeps_hashes_and_a_sealed_verifier_whose_s256_is_the_challenge(
    setup: Setup,
) -> None:
    auth = await setup.flows.begin("crm", "alice")
    [stored] = setup.store.written
    state, browser = auth.state.reveal(), auth.browser_secret.reveal()
    assert is_state(state) and len(base64.urlsafe_b64decode(state + "=")) == 32
    assert stored == auth.flow and stored.kind is FlowKind.STATE
    assert stored.token_hash == sha256(state) and stored.browser_hash == sha256(browser)
    assert stored.expires_at - stored.created_at == timedelta(minutes=10)
    flow, verifier = await setup.flows.complete(state, service="crm", browser_secret=browser)
    value = verifier.reveal()
    assert 43 <= len(value) <= 128 and set(value) <= UNRESERVED
    assert stored.verifier is not None and value.encode() not in stored.verifier
    digest = hashlib.sha256(value.encode()).digest()
    assert auth.code_challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert flow.user_id == "alice" and flow.service == "crm"
    for secret in (state, browser, value):
        assert secret not in repr(auth) and secret not in repr(flow)


async def test_a_state_is_used_once(setup: Setup) -> None:
    auth = await setup.flows.begin("crm", "alice")
    state, browser = auth.state.reveal(), auth.browser_secret.reveal()
    await setup.flows.complete(state, service="crm", browser_secret=browser)
    with pytest.raises(ConnectRefused) as replay:
        await setup.flows.complete(state, service="crm", browser_secret=browser)
    assert replay.value.description == STATE_GONE


async def test_an_expired_state_is_refused(setup: Setup) -> None:
    auth = await setup.flows.begin("crm", "alice")
    setup.clock.advance(timedelta(minutes=10))
    with pytest.raises(ConnectRefused, match="already used or has expired"):
        await setup.flows.complete(
            auth.state.reveal(), service="crm", browser_secret=auth.browser_secret.reveal()
        )


@pytest.mark.parametrize("cookie", [None, "", "another-browser-secret-value-xyz"])
async def test_a_state_from_another_browser_is_refused_and_used_up(
    setup: Setup, cookie: str | None
) -> None:
    auth = await setup.flows.begin("crm", "alice")
    with pytest.raises(ConnectRefused) as refused:
        await setup.flows.complete(auth.state.reveal(), service="crm", browser_secret=cookie)
    assert refused.value.description == WRONG_BROWSER and refused.value.user_id == "alice"
    with pytest.raises(ConnectRefused, match="already used"):  # the right browser, too late
        await setup.flows.complete(
            auth.state.reveal(), service="crm", browser_secret=auth.browser_secret.reveal()
        )
    [event, _] = await setup.events("connection.refuse")
    assert event["detail"]["why"] == ("no_browser_cookie" if cookie is None else "other_browser")


async def test_a_state_for_another_service_is_refused(setup: Setup) -> None:
    auth = await setup.flows.begin("crm", "alice")
    with pytest.raises(ConnectRefused) as refused:
        await setup.flows.complete(
            auth.state.reveal(), service="calendar", browser_secret=auth.browser_secret.reveal()
        )
    assert refused.value.description == STATE_OTHER_SERVICE


async def test_a_ticket_is_not_a_state_and_a_state_not_a_ticket(setup: Setup) -> None:
    ticket, _ = await setup.flows.issue_ticket("crm", "alice", by="cli")
    auth = await setup.flows.begin("crm", "alice")
    with pytest.raises(ConnectRefused):
        await setup.flows.complete(ticket.reveal(), service="crm", browser_secret="x")
    with pytest.raises(ConnectRefused):
        await setup.flows.redeem_ticket(auth.state.reveal(), service="crm")
    # both still usable: neither lookup touched the other kind
    assert (await setup.flows.redeem_ticket(ticket.reveal(), service="crm")).user_id == "alice"
    await setup.flows.complete(
        auth.state.reveal(), service="crm", browser_secret=auth.browser_secret.reveal()
    )


async def test_a_sealed_verifier_moved_to_another_flow_does_not_open(setup: Setup) -> None:
    mallory = await setup.flows.begin("crm", "mallory")
    alice = await setup.flows.begin("crm", "alice")
    # a writer with store access swaps alice's record for one carrying mallory's verifier
    moved = alice.flow.model_copy(update={"verifier": mallory.flow.verifier})
    await setup.store.take_flow(alice.flow.token_hash, kind=FlowKind.STATE, now=setup.clock.now())
    await setup.store.put_flow(moved)
    with pytest.raises(ConnectRefused) as refused:
        await setup.flows.complete(
            alice.state.reveal(), service="crm", browser_secret=alice.browser_secret.reveal()
        )
    assert refused.value.description == STATE_UNREADABLE


async def test_the_verifier_opens_after_a_key_rotation(setup: Setup) -> None:
    auth = await setup.flows.begin("crm", "alice")
    old = setup.keyring.key("kek-a")
    rotated = KeyRing({"kek-b": bytes(range(32)), "kek-a": old}, "kek-b")
    flows = ConnectFlows(setup.store, rotated, clock=setup.clock)
    _, verifier = await flows.complete(
        auth.state.reveal(), service="crm", browser_secret=auth.browser_secret.reveal()
    )
    assert len(verifier.reveal()) == 86


async def test_a_verifier_whose_key_left_the_ring_is_refused(setup: Setup) -> None:
    auth = await setup.flows.begin("crm", "alice")
    flows = ConnectFlows(setup.store, KeyRing.generate("kek-new"), clock=setup.clock)
    with pytest.raises(ConnectRefused, match="start the connection again"):
        await flows.complete(
            auth.state.reveal(), service="crm", browser_secret=auth.browser_secret.reveal()
        )


async def test_a_store_outage_is_a_503_not_a_refusal() -> None:
    flows = ConnectFlows(BrokenStore(), KeyRing.generate())
    with pytest.raises(StoreUnavailable):
        await flows.issue_ticket("crm", "alice", by="cli")
    with pytest.raises(StoreUnavailable):
        await flows.begin("crm", "alice")
    with pytest.raises(StoreUnavailable):
        await flows.redeem_ticket(str((await _any_ticket()).reveal()), service="crm")
    with pytest.raises(StoreUnavailable):
        await flows.inspect_ticket(str((await _any_ticket()).reveal()), service="crm")
    with pytest.raises(StoreUnavailable):
        await flows.complete("A" * 21 + "b" * 22, service="crm", browser_secret=None)


async def _any_ticket() -> Any:
    ticket, _ = await ConnectFlows(MemoryStore(), KeyRing.generate()).issue_ticket(
        "crm", "alice", by="cli"
    )
    return ticket


# --- anything a browser or a vendor can send -------------------------------------------------

_FUZZ_FLOWS = ConnectFlows(MemoryStore(), KeyRing.generate())


def _only_refused(value: str, cookie: str | None) -> None:
    async def attempt() -> None:
        with pytest.raises(ConnectRefused):
            await _FUZZ_FLOWS.redeem_ticket(value, service="crm")
        with pytest.raises(ConnectRefused):
            await _FUZZ_FLOWS.complete(value, service="crm", browser_secret=cookie)

    anyio.run(attempt)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=43, max_size=43),
        st.builds(
            lambda tail: TICKET_PREFIX + tail,
            st.text(alphabet=string.ascii_letters + string.digits, min_size=49, max_size=49),
        ),
    ),
    st.one_of(st.none(), st.text(max_size=60)),
)
def test_any_presented_value_is_only_ever_refused(value: str, cookie: str | None) -> None:
    _only_refused(value, cookie)
