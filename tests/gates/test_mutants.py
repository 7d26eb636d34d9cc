"""Gaps a hand-mutation round found: behaviours docs/how-to/approvals.md promises that no
other test pinned down (a refusal kept by the body gate, the order of consume and charge, a
charge refused after the room check, budgets of other services, unique limit names, the
subjects and defaults of budgets, and the vendor-native placement left out of a binding)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard import CredentialOwner, CredentialScope, Guard, Level, RouteRule, ServiceConfig
from agentguard._gates import BodyGate
from agentguard._model import ApprovalRecord
from agentguard._request import GuardRequest
from agentguard.approvals import ApprovalPolicy
from agentguard.approvals._binding import (
    Placement,
    bound_headers,
    bound_target,
    display_headers,
    display_query,
    preview,
)
from agentguard.approvals._errors import ApprovalRequired
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.errors import ConfigurationError
from agentguard.limits import Budget, LimitScope, RateLimit
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.storage._gcra import interval_micros
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.gates.support import (
    APPROVAL_TTL,
    Recorder,
    World,
    approve,
    audit_events,
    build_world,
    crm_rules,
    held_and_approved,
    hold,
    issue,
    refusal,
)
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

DAY = timedelta(days=1)


async def _record(world: World, approval_id: str) -> ApprovalRecord:
    store = world.guard.approval_store
    assert store is not None
    record = await store.get_approval(approval_id)
    assert record is not None
    return record


def _daily(limit: int, service: str | None = "crm", **options: Any) -> list[Budget]:
    return [Budget("crm-daily", limit=limit, window=DAY, service=service, **options)]


# -- the body gate keeps its refusal ------------------------------------------------------------


async def test_a_refused_body_gate_raises_the_same_refusal_again_and_audits_it_once(
    clock: FakeClock,
) -> None:
    """ "A second call does nothing: the call was already decided": a gate that refused raises
    that refusal again, without holding (or auditing) the call a second time."""
    world = await build_world(MemoryStore(clock=clock), clock)
    principal = await world.guard.resolve(world.alice.key)
    request = GuardRequest(
        method="POST", path="/crm/x", raw_path=b"/crm/x", headers=[(b"host", b"gw.test")]
    )
    requirement = world.guard.permissions.requirement("POST", "/crm/x")
    assert requirement is not None and requirement.approval
    gate = BodyGate(world.guard._gates, request, principal, requirement)
    with pytest.raises(ApprovalRequired) as first:
        await gate(b"{}")
    assert first.value.reason.value == "approval_required"
    events = len(await audit_events(world.store))
    with pytest.raises(ApprovalRequired) as second:
        await gate(b"{}")
    assert second.value is first.value  # the kept refusal, not a new "approval_pending"
    assert gate.refusal is first.value
    assert len(await audit_events(world.store)) == events


# -- consume before charge; a charge refused after the room check ------------------------------


class _LosingApprovals:
    """An approval store on which another instance uses each approval just before this one."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        assert await self._store.consume_approval(approval_id, binding=binding, now=now)
        return bool(await self._store.consume_approval(approval_id, binding=binding, now=now))


async def test_the_loser_of_a_consume_race_is_charged_nothing(clock: FakeClock) -> None:
    """ "The approval used, once across every instance (losers are charged nothing)": the
    approval is consumed before the budgets are charged."""
    store = MemoryStore(clock=clock)
    policy = ApprovalPolicy(max_body=4096, ttl=APPROVAL_TTL, store=_LosingApprovals(store))
    world = await build_world(store, clock, approvals=policy, budgets=_daily(1))
    async with world.client() as client:
        approval_id = await held_and_approved(world, client, "POST", "/crm/x", b"{}")
        lost = await client.post("/crm/x", headers=world.alice.auth(approval_id), content=b"{}")
        refusal(lost, 403, "approval_invalid", "approval_used")
        assert world.recorder.calls == []
        # the one unit of the day is still there
        assert (await client.get("/crm/y", headers=world.alice.auth())).status_code == 200


class _SpentMeanwhile:
    """A limit store on which another instance spends the budget right after the room check."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Any:
        seen = await self._store.charge(counter, cost=cost, limit=limit, expires_at=expires_at)
        if cost == 0:  # the room check: the other instance takes what is left
            left = limit - seen.used
            await self._store.charge(counter, cost=left, limit=limit, expires_at=expires_at)
        return seen


async def test_a_charge_refused_after_the_room_check_refuses_the_approved_call(
    clock: FakeClock,
) -> None:
    """The room check charges nothing; "charge still decides atomically afterwards": when the
    budget is spent in between, the approved call is refused 429 and never runs."""
    store = MemoryStore(clock=clock)
    world = await build_world(store, clock, budgets=_daily(5), limit_store=_SpentMeanwhile(store))
    async with world.client() as client:
        approval_id = await held_and_approved(world, client, "POST", "/crm/x", b"{}")
        refused = await client.post("/crm/x", headers=world.alice.auth(approval_id), content=b"{}")
        refusal(refused, 429, "budget_exhausted", "budget_exhausted")
    assert world.recorder.calls == []
    denied = [e for e in await audit_events(store) if e.get("reason") == "budget_exhausted"]
    assert denied and denied[-1]["actor"]["user"] == "alice", denied


# -- budgets of other services ------------------------------------------------------------------


async def test_a_budget_of_another_service_is_neither_checked_nor_charged(
    clock: FakeClock,
) -> None:
    """A budget with ``service=`` counts only that service's calls: a spent budget of another
    service refuses nothing, and calls elsewhere never spend it."""
    budgets = [
        Budget("mail-daily", limit=0, window=DAY, service="mail"),
        Budget("crm-daily", limit=1, window=DAY, service="crm"),
    ]
    world = await build_world(MemoryStore(clock=clock), clock, budgets=budgets)
    async with world.client() as client:
        for _ in range(3):  # /open needs no service: the crm budget is not charged
            assert (await client.get("/open/x", headers=world.alice.auth())).status_code == 200
        approval_id = await held_and_approved(world, client, "POST", "/crm/x", b"{}")
        ran = await client.post("/crm/x", headers=world.alice.auth(approval_id), content=b"{}")
        assert ran.status_code == 200, ran.text
        spent = await client.get("/crm/y", headers=world.alice.auth())
        assert refusal(spent, 429, "budget_exhausted", "budget_exhausted")["budget"] == "crm-daily"


# -- names, subjects and defaults ---------------------------------------------------------------


def test_a_budget_and_a_rate_limit_cannot_share_a_name(clock: FakeClock) -> None:
    """Names are unique among all budgets and rate limits (they name the counters)."""
    with pytest.raises(ConfigurationError):
        Guard(
            MemoryStore(clock=clock),
            rules=crm_rules(),
            clock=clock,
            budgets=[Budget("crm", limit=10, window=DAY)],
            rate_limits=[RateLimit("crm", rate=1)],
        )


@pytest.mark.parametrize("per", [LimitScope.WORKSPACE, LimitScope.ACCOUNT])
async def test_workspace_and_account_budgets_are_shared_by_their_users(
    clock: FakeClock, per: LimitScope
) -> None:
    """``per=workspace`` (``account``): every user of the workspace (account) spends one
    counter; another workspace (account) has its own."""
    store = MemoryStore(clock=clock)
    world = await build_world(store, clock, budgets=_daily(1, per=per))
    # carol: alice's account but another workspace; dave: another account and workspace
    await make_user(store, user_id="carol", workspace_id="ws-2", grants="crm:write")
    await make_user(
        store, user_id="dave", account_id="acct-2", workspace_id="ws-3", grants="crm:write"
    )
    carol = await issue(world.guard, "carol", "ws-2")
    dave = await issue(world.guard, "dave", "ws-3")
    async with world.client() as client:

        async def call(party: Any) -> int:
            return (await client.get("/crm/x", headers=party.auth())).status_code

        assert await call(world.alice) == 200
        assert await call(world.bob) == 429  # alice's workspace and account
        assert await call(carol) == (200 if per is LimitScope.WORKSPACE else 429)
        assert await call(dave) == 200


async def test_a_budget_is_per_user_by_default(clock: FakeClock) -> None:
    """``Budget(..., per=LimitScope.USER)`` is the default: two key families of one user share
    it, another user has their own."""
    budget = Budget("crm-daily", limit=1, window=DAY, service="crm")
    world = await build_world(MemoryStore(clock=clock), clock, budgets=[budget])
    async with world.client() as client:
        assert (await client.get("/crm/a", headers=world.alice.auth())).status_code == 200
        assert (await client.get("/crm/a", headers=world.alice2.auth())).status_code == 429
        assert (await client.get("/crm/a", headers=world.bob.auth())).status_code == 200


async def test_a_budget_of_zero_lets_only_free_calls_through(clock: FakeClock) -> None:
    """``limit`` is a whole number >= 0; a zero budget refuses every call that costs, and a
    route with ``cost = 0`` is free."""
    rules = crm_rules(cost={"GET": 0}, approval=False)
    world = await build_world(MemoryStore(clock=clock), clock, rules, budgets=_daily(0))
    async with world.client() as client:
        assert (await client.get("/crm/a", headers=world.alice.auth())).status_code == 200
        refused = await client.post("/crm/a", headers=world.alice.auth())
        refusal(refused, 429, "budget_exhausted", "budget_exhausted")


# -- the vendor-native placement field ----------------------------------------------------------


def test_the_query_placement_field_is_left_out_however_its_name_is_encoded() -> None:
    """The placement's field is the credential (swapped by the proxy): left out of the bound
    target whether its name is sent plain or percent-encoded; every other field stays."""
    placement = Placement("query", "api_key")
    for sent in (b"api_key=ag_x&a=1", b"api%5Fkey=ag_x&a=1", b"api%5fkey=ag_x&a=1"):
        request = GuardRequest("GET", "/x", raw_path=b"/x", query_string=sent)
        assert bound_target(request, placement) == b"/x?a=1", sent
    request = GuardRequest("GET", "/x", raw_path=b"/x", query_string=b"api_keys=1&a=1")
    assert bound_target(request, placement) == b"/x?api_keys=1&a=1"


@pytest.fixture
def header_placed() -> Iterator[tuple[Any, Recorder, str]]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    world = anyio.run(build_world, store, clock)
    upstream = Recorder()
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)

    async def credential() -> None:
        await vault.put("crm", CredentialOwner.USER, "alice", CANARY, scope=CredentialScope.USER)

    anyio.run(credential)
    with LoopbackServer(upstream) as upstream_server:
        service = ServiceConfig(
            name="crm",
            base_url=upstream_server.url,
            allow_insecure_http=True,
            placement="header",  # type: ignore[arg-type]
            parameter="X-Api-Key",
            routes=[{"path": "/", "approval": ["DELETE"]}],  # type: ignore[arg-type]
        )
        proxy = ProxyApp(world.guard, service, CredentialSwapper(vault, clock=clock))
        with LoopbackServer(proxy, lifespan="on") as server:
            yield world, upstream, server.url


def test_the_header_placement_is_neither_bound_nor_shown(
    header_placed: tuple[Any, Recorder, str],
) -> None:
    """Behind the proxy with ``placement = "header"``, the agent's key rides in ``X-Api-Key``:
    that header is the credential, so the approval neither binds nor shows it, and the
    approved call runs with the key it is sent with."""
    world, upstream, url = header_placed
    key = {"X-Api-Key": world.alice.key}
    held = httpx.delete(url + "/contacts/7", headers={**key, "X-Mode": "soft"}, timeout=10)
    assert held.status_code == 403, held.text
    approval_id = held.json()["approval_id"]
    anyio.run(approve, world.guard, approval_id)

    async def shown() -> str:
        record = await _record(world, approval_id)
        return str(record.headers)

    headers = anyio.run(shown)
    assert "x-mode: soft" in headers
    assert "x-api-key" not in headers.lower()
    ran = httpx.delete(
        url + "/contacts/7",
        headers={**key, "X-Mode": "soft", "AgentGuard-Approval": approval_id},
        timeout=10,
    )
    assert ran.status_code == 200, ran.text
    assert [call.path for call in upstream.calls] == ["/contacts/7"]


# -- GCRA: a rested bucket -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_long_rest_refills_a_bucket_only_to_its_burst(
    clock: FakeClock, tmp_path: Path, backend: str
) -> None:
    """A bucket left alone for many intervals holds ``burst`` calls, not one per interval
    rested: the rest is not banked (``max(tat, now)``; SQLite keeps the bucket's row)."""
    limit = RateLimit("per-key", rate=1, period=timedelta(seconds=10), burst=2)
    async with AsyncExitStack() as stack:
        store: Any = MemoryStore(clock=clock)
        if backend == "sqlite":
            store = await stack.enter_async_context(SQLiteStore(tmp_path / "g.db", clock=clock))
        await _rested(clock, store, limit)


async def _rested(clock: FakeClock, store: Any, limit: RateLimit) -> None:
    world = await build_world(store, clock, rate_limits=[limit])
    async with world.client() as client:

        async def call() -> int:
            return (await client.get("/crm/x", headers=world.alice.auth())).status_code

        assert await call() == 200
        clock.advance(100)  # ten intervals
        assert [await call() for _ in range(3)] == [200, 200, 429]
        refused = await client.get("/crm/x", headers=world.alice.auth())
        assert refusal(refused, 429, "rate_limited", "rate_limited")["limit"] == "per-key"
        assert refused.headers["retry-after"] == "10"


# -- the shared GCRA helpers every LimitStore uses ----------------------------------------------


def test_interval_micros_is_the_nearest_microsecond_and_checks_its_parameters() -> None:
    """``interval_micros``: the nearest whole microsecond (not a truncation), and a
    ``ValueError`` for an interval under one microsecond or a burst under one: a store's
    ``take`` never runs an unlimited bucket."""
    assert interval_micros(0.00397, 1) == 3970  # 0.00397 * 1e6 == 3969.9999999999995
    with pytest.raises(ValueError):
        interval_micros(4e-7, 1)  # rounds to 0 µs
    with pytest.raises(ValueError):
        interval_micros(1.0, 0)


# -- what the operator is shown -----------------------------------------------------------------


def test_nul_bytes_never_reach_what_an_operator_is_shown() -> None:
    """NUL is replaced by U+FFFD in the shown query and headers (a PostgreSQL text column
    cannot hold it), as in the body preview."""
    request = GuardRequest(
        "POST", "/x", raw_path=b"/x", query_string=b"a=\x00", headers=[(b"x-mode", b"s\x00ft")]
    )
    assert display_query(request) == "a=\ufffd"
    assert display_headers(bound_headers(request)) == "x-mode: s\ufffdft"


async def test_a_query_of_the_whole_kibibyte_is_shown_whole(clock: FakeClock) -> None:
    """A query of up to 1 KiB is held, and the operator is shown all of it."""
    world = await build_world(MemoryStore(clock=clock), clock)
    query = "q=" + ("x7Kp" * 256)[:1022]  # mixed: the HTTP client logs this URL
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/x?" + query, b"{}")
    record = await _record(world, approval_id)
    assert record.query == query


async def test_sec_headers_are_neither_bound_nor_shown(clock: FakeClock) -> None:
    """``Sec-*`` headers are the client's own, per attempt: a retry with others still runs
    the approved call, and the operator is not shown them."""
    world = await build_world(MemoryStore(clock=clock), clock)
    async with world.client() as client:
        held = await client.post(
            "/crm/x", content=b"{}", headers=world.alice.auth(**{"Sec-Fetch-Mode": "cors"})
        )
        approval_id = refusal(held, 403, "approval_required", "approval_required")["approval_id"]
        await approve(world.guard, approval_id)
        record = await _record(world, approval_id)
        assert "sec-fetch-mode" not in record.headers
        ran = await client.post(
            "/crm/x",
            content=b"{}",
            headers=world.alice.auth(approval_id, **{"Sec-Fetch-Mode": "navigate"}),
        )
        assert ran.status_code == 200, ran.text


# -- what is held, and how often it is announced ------------------------------------------------


async def test_a_path_just_over_what_an_operator_is_shown_is_refused(clock: FakeClock) -> None:
    """A held call's path is at most 1 KiB (what the listing shows): 1024 bytes are held,
    1025 are refused 400 rather than held."""
    world = await build_world(MemoryStore(clock=clock), clock)
    async with world.client() as client:
        fits = "/crm/" + ("p3Qz" * 256)[: 1024 - 5]  # mixed: the HTTP client logs this URL
        await hold(client, world.alice, "POST", fits, b"{}")
        over = await client.post(fits + "a", headers=world.alice.auth(), content=b"{}")
        assert over.status_code == 400, over.text
    assert world.recorder.calls == []


async def test_bound_headers_too_long_to_show_are_refused_not_held(clock: FakeClock) -> None:
    """A call whose bound headers do not fit in the 4 KiB the operator is shown is refused
    400 rather than held."""
    world = await build_world(MemoryStore(clock=clock), clock)
    async with world.client() as client:
        big = await client.post(
            "/crm/x", content=b"{}", headers=world.alice.auth(**{"X-Note": "n" * 4200})
        )
        assert big.status_code == 400, big.text
        assert big.json()["error"] == "invalid_request"
        await hold(client, world.alice, "POST", "/crm/x", b"{}")  # without it: held
    store = world.guard.approval_store
    assert store is not None
    pending = await store.list_approvals(limit=10)
    assert len(pending) == 1


class _Notes:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def notify(self, event: str, record: Any) -> None:
        self.events.append((event, record.id))


async def test_the_same_call_held_again_is_announced_and_audited_once(clock: FakeClock) -> None:
    """Sending the same held call again gets the same approval (``approval_pending``), not a
    second ``approval.requested`` notification nor a second ``approval.request`` event."""
    notes = _Notes()
    policy = ApprovalPolicy(max_body=4096, ttl=APPROVAL_TTL, notifier=notes)
    world = await build_world(MemoryStore(clock=clock), clock, approvals=policy)
    async with world.client() as client:
        first = await hold(client, world.alice, "POST", "/crm/x", b"{}")
        again = await client.post("/crm/x", headers=world.alice.auth(), content=b"{}")
        body = refusal(again, 403, "approval_required", "approval_pending")
        assert body["approval_id"] == first
    assert notes.events == [("approval.requested", first)]
    await world.guard.audit.flush()
    actions = [e["action"] for e in await audit_events(world.store)]
    assert actions.count("approval.request") == 1


class _SlowRoomCheck:
    """A limit store whose room check takes so long that the approval expires meanwhile."""

    def __init__(self, store: MemoryStore, clock: FakeClock) -> None:
        self._store, self._clock = store, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Any:
        seen = await self._store.charge(counter, cost=cost, limit=limit, expires_at=expires_at)
        if cost == 0:
            self._clock.advance(APPROVAL_TTL)
        return seen


async def test_an_approval_that_expires_before_it_is_consumed_is_refused_expired(
    clock: FakeClock,
) -> None:
    """An approval that expired between its check and its use is ``approval_expired`` (send
    the call again without the header), not ``approval_used``."""
    store = MemoryStore(clock=clock)
    world = await build_world(
        store, clock, budgets=_daily(5), limit_store=_SlowRoomCheck(store, clock)
    )
    async with world.client() as client:
        approval_id = await held_and_approved(world, client, "POST", "/crm/x", b"{}")
        late = await client.post("/crm/x", headers=world.alice.auth(approval_id), content=b"{}")
        refusal(late, 403, "approval_invalid", "approval_expired")
    assert world.recorder.calls == []


def test_head_needs_what_get_needs() -> None:
    """``HEAD`` needs at least what ``GET`` needs: its level, its approval and its cost."""
    rule = RouteRule(
        "/crm", "crm", methods={"GET": "write"}, approval={"GET"}, cost={"GET": 5, "HEAD": 2}
    )
    head = rule.requirement("HEAD")
    assert (head.level, head.approval, head.cost) == (Level.WRITE, True, 5)
    assert head.rule == rule.version


# -- what is bound and shown: the documented lists ----------------------------------------------

_NOT_BOUND = (
    "Authorization", "DPoP", "Content-Length", "Connection", "Keep-Alive", "TE",
    "Transfer-Encoding", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language",
    "Cache-Control", "Pragma", "Cookie", "traceparent", "tracestate", "baggage", "X-Request-Id",
    "X-Correlation-Id", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
    "X-Real-IP", "Via", "Date", "Idempotency-Key", "X-Idempotency-Key", "Origin", "Referer",
    "Sec-Fetch-Mode", "X-Stainless-Lang", "X-Amzn-Trace-Id", "AgentGuard-Approval", "Expect",
)  # fmt: skip


@pytest.mark.parametrize("name", _NOT_BOUND)
def test_each_per_attempt_transport_or_credential_header_is_left_out(name: str) -> None:
    """The per-attempt, transport and credential headers docs/how-to/approvals.md lists are
    neither bound nor shown; the headers around them are."""
    headers = [(b"host", b"gw.test"), (name.lower().encode(), b"v1"), (b"x-mode", b"soft")]
    request = GuardRequest("POST", "/x", raw_path=b"/x", headers=headers)
    assert bound_headers(request) == (
        ("(exchange)", "http"),
        ("host", "gw.test"),
        ("x-mode", "soft"),
    )


def test_the_operator_is_told_a_call_is_a_websocket_handshake() -> None:
    request = GuardRequest("GET", "/x", raw_path=b"/x", scheme="wss", headers=[(b"host", b"h")])
    assert display_headers(bound_headers(request)) == "(a websocket handshake)\nhost: h"


def test_a_key_is_replaced_whole_wherever_it_is_shown() -> None:
    """Agentguard keys are replaced by ``[key]``: every character of them."""
    key = "ag_at_" + "Z" * 49
    request = GuardRequest(
        "POST",
        "/x",
        raw_path=b"/x",
        query_string=f"k={key}".encode(),
        headers=[(b"x-k", key.encode())],
    )
    assert display_query(request) == "k=[key]"
    assert display_headers(bound_headers(request)) == "x-k: [key]"
    assert preview(f"k={key}&n=1".encode()) == "k=[key]&n=1"


def test_needs_approval_takes_a_method_in_any_case() -> None:
    assert RouteRule("/crm", "crm", approval={"delete"}).needs_approval("Delete")


def test_an_infinite_interval_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        interval_micros(math.inf, 1)


async def test_a_full_approval_queue_refusal_is_audited_once(clock: FakeClock) -> None:
    """A call refused because its user already has ``max_pending`` calls waiting is audited
    once, naming the user."""
    policy = ApprovalPolicy(max_body=4096, ttl=APPROVAL_TTL, max_pending=1)
    world = await build_world(MemoryStore(clock=clock), clock, approvals=policy)
    async with world.client() as client:
        await hold(client, world.alice, "POST", "/crm/a", b"{}")
        full = await client.post("/crm/b", headers=world.alice.auth(), content=b"{}")
        refusal(full, 429, "too_many_requests", "approval_queue_full")
    await world.guard.audit.flush()
    events = [e for e in await audit_events(world.store) if e["reason"] == "approval_queue_full"]
    assert [e["actor"]["user"] for e in events] == ["alice"], events


async def test_a_denial_and_a_retry_before_the_decision_are_audited(clock: FakeClock) -> None:
    """Every outcome is audited with the approval id: a retry before the decision
    (``approval_pending``) and an operator's denial (``approval.decide``, deny,
    ``approval_denied``)."""
    world = await build_world(MemoryStore(clock=clock), clock)
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/x", b"{}")
        early = await client.post("/crm/x", headers=world.alice.auth(approval_id), content=b"{}")
        refusal(early, 403, "approval_required", "approval_pending")
    await approve(world.guard, approval_id, yes=False)
    await world.guard.audit.flush()
    events = await audit_events(world.store)
    pending = [e for e in events if e["reason"] == "approval_pending"]
    assert [(e["decision"], e["detail"].get("approval_id")) for e in pending] == [
        ("deny", approval_id)
    ]
    [decided] = [e for e in events if e["action"] == "approval.decide"]
    assert (decided["decision"], decided["reason"]) == ("deny", "approval_denied"), decided


async def test_a_key_in_the_query_is_not_shown_to_the_operator(clock: FakeClock) -> None:
    """The query an operator is shown has agentguard keys replaced by ``[key]``."""
    world = await build_world(MemoryStore(clock=clock), clock)
    fake = "ag_at_" + "Qr5" * 16 + "Q"  # mixed: the HTTP client logs this URL
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", f"/crm/x?note={fake}", b"{}")
    assert (await _record(world, approval_id)).query == "note=[key]"
