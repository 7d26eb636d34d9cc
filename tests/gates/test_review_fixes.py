"""Regressions for what the independent reviews of issue 20 found, beyond the proxy's."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import pytest

from agentguard import Guard, RouteRule
from agentguard.approvals import ApprovalPolicy
from agentguard.approvals._notify import webhook_body
from agentguard.config import ApprovalSettings
from agentguard.errors import ConfigurationError, UsageError
from agentguard.integrations.mcp import AgentGuardMCP, AgentGuardTokenVerifier
from agentguard.limits import Budget, RateLimit
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.support import (
    ORIGIN,
    World,
    approve,
    audit_events,
    build_world,
    crm_rules,
    hold,
    refusal,
)

pytestmark = pytest.mark.anyio

# Long, and never a run of one character: a test secret such as "a" * 32 would otherwise be
# "found" in the request lines the HTTP client logs (the secrets canary searches log records).
FILLER = "".join(f"w{n:04d}" for n in range(220))


async def test_the_mcp_wrapper_holds_calls_without_reviewers(world: World) -> None:
    """AgentGuardMCP ran the app directly when it had no reviewers, skipping the approval."""
    app = AgentGuardMCP(world.recorder, world.guard)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        response = await client.post("/crm/mcp", headers=world.alice.auth(), content=b"{}")
    refusal(response, 403, "approval_required", "approval_required")
    assert world.recorder.calls == []


async def test_a_token_verifier_refuses_a_guard_that_holds_calls(world: World) -> None:
    with pytest.raises(ConfigurationError, match="AgentGuardMCP"):
        AgentGuardTokenVerifier(world.guard)


@pytest.mark.parametrize("method", ["delete", "X" * 40])
async def test_an_unusual_method_on_a_held_route_is_a_400_not_a_500(
    clock: FakeClock, method: str
) -> None:
    """Sent as is (an HTTP client would upper-case ``delete``): servers pass any token, and
    ``approval=True`` holds every method."""
    world = await build_world(MemoryStore(clock=clock), clock, rules=crm_rules(approval=True))
    messages: list[MutableMapping[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": "/crm/items/1", "raw_path": b"/crm/items/1",
        "root_path": "", "query_string": b"", "server": ("gw.test", 80),
        "headers": [(b"authorization", world.alice.auth()["Authorization"].encode())],
    }  # fmt: skip

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await world.app(scope, receive, send)
    assert messages[0]["status"] == 400, messages
    assert b'"invalid_request"' in messages[1]["body"]
    assert world.recorder.calls == []


@pytest.mark.parametrize("url", ["/crm/items/1?note=" + FILLER, "/crm/" + FILLER + "/purge"])
async def test_a_call_too_long_to_show_an_operator_is_not_held(world: World, url: str) -> None:
    """The operator listing shows 1 KiB of path and of query: a longer one is refused, never
    held with a part the operator could not see."""
    async with world.client() as client:
        response = await client.delete(url, headers=world.alice.auth())
    assert response.status_code == 400, response.text
    assert "shown to an operator" in response.json()["error_description"]
    store = world.guard.approval_store
    assert store is not None and await store.list_approvals() == []


async def test_the_operator_is_shown_the_whole_body_by_default(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    world = await build_world(store, clock, approvals=ApprovalPolicy())
    body = b'{"amount": 10, "memo": "' + b"x" * 4000 + b'", "amount": 100000}'
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/pay", body)
    record = await store.get_approval(approval_id)
    assert record is not None and record.body_preview.encode() == body


async def test_one_user_cannot_flood_the_approval_queue(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    policy = ApprovalPolicy(max_pending=3, ttl=timedelta(minutes=5))
    world = await build_world(store, clock, approvals=policy)
    async with world.client() as client:
        held = [await hold(client, world.alice, "POST", f"/crm/n/{i}") for i in range(3)]
        again = await client.post("/crm/n/0", headers=world.alice.auth())
        flood = await client.post("/crm/n/99", headers=world.alice.auth())
        other = await client.post("/crm/n/99", headers=world.bob.auth())
        refusal(again, 403, "approval_required", "approval_pending")  # the same call again
        assert again.json()["approval_id"] == held[0]
        refusal(flood, 429, "too_many_requests", "approval_queue_full")
        assert flood.headers["retry-after"] == "60"
        refusal(other, 403, "approval_required", "approval_required")  # per user
        await approve(world.guard, held[1])  # no longer pending: room for one more
        refusal(
            await client.post("/crm/n/99", headers=world.alice.auth()),
            403,
            "approval_required",
            "approval_required",
        )
        clock.advance(timedelta(minutes=6).total_seconds())  # expired ones free the queue too
        refusal(
            await client.post("/crm/n/100", headers=world.alice.auth()),
            403,
            "approval_required",
            "approval_required",
        )
    assert len(await store.list_approvals(user_id="alice")) == 5


async def test_losers_of_an_approval_race_spend_no_budget(clock: FakeClock) -> None:
    """Verify, check the room, consume, then charge: a retry refused ``approval_used`` costs
    nothing, and a spent budget leaves the approval usable."""
    store = MemoryStore(clock=clock)
    budget = Budget("pay", limit=6, window=timedelta(minutes=2), service="crm")
    world = await build_world(store, clock, rules=crm_rules(cost=3), budgets=[budget])
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/pay", b"x")
        await approve(world.guard, approval_id)
        statuses = []
        for _ in range(5):
            response = await client.post(
                "/crm/pay", headers=world.alice.auth(approval_id), content=b"x"
            )
            statuses.append(response.status_code)
        assert statuses == [200, 403, 403, 403, 403]
        second = await hold(client, world.alice, "POST", "/crm/pay", b"y")
        await approve(world.guard, second)
        ok = await client.post("/crm/pay", headers=world.alice.auth(second), content=b"y")
        assert ok.status_code == 200, ok.text  # 3 + 3 = 6: the losers were charged nothing
        third = await hold(client, world.alice, "POST", "/crm/pay", b"z")
        await approve(world.guard, third)
        spent = await client.post("/crm/pay", headers=world.alice.auth(third), content=b"z")
        refusal(spent, 429, "budget_exhausted", "budget_exhausted")
        clock.advance(timedelta(minutes=2).total_seconds())  # the next window, within the ttl
        later = await client.post("/crm/pay", headers=world.alice.auth(third), content=b"z")
        assert later.status_code == 200, later.text  # the spent budget left it usable


async def test_a_limit_store_outage_names_the_limit_store(clock: FakeClock) -> None:
    from agentguard.testing import FaultyStore

    store = FaultyStore(MemoryStore(clock=clock))
    limit = RateLimit("r", 100, burst=100)
    world = await build_world(store, clock, rules=[RouteRule("/open", None)], rate_limits=[limit])
    store.fail("take")
    async with world.client() as client:
        response = await client.get("/open/x", headers=world.alice.auth())
    assert response.status_code == 503
    assert "limit store" in response.json()["error_description"]
    events = await audit_events(world.store)
    assert any(event.get("reason") == "store_unavailable" for event in events)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimit("r", 1e-13),
        lambda: RateLimit("r", 1, burst=10**13),
        lambda: RateLimit("r", 1, period=timedelta(days=365 * 11)),
        lambda: Budget("b", 2**63, timedelta(days=1)),
    ],
)
def test_limits_the_stores_cannot_hold_are_refused_when_configured(make: object) -> None:
    with pytest.raises(UsageError):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/a", True),
        ("http://127.0.0.1:9000/a", True),
        ("http://[::1]:9000/a", True),
        ("http://hooks.example.com/a", False),
        ("https://user:pw@hooks.example.com/a", False),
        ("ftp://hooks.example.com/a", False),
    ],
)
def test_the_webhook_url_is_https_or_loopback(url: str, ok: bool) -> None:
    if ok:
        assert ApprovalSettings(webhook_url=url).webhook_url == url
    else:
        with pytest.raises(ValueError, match="webhook_url"):
            ApprovalSettings(webhook_url=url)


async def test_the_webhook_delivery_id_is_signed_in_the_body(world: World) -> None:
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/x")
    store = world.guard.approval_store
    assert store is not None
    record = await store.get_approval(approval_id)
    assert record is not None
    body = webhook_body("approval.requested", record, world.clock.now(), "d" * 32)
    assert b'"delivery":"' + b"d" * 32 + b'"' in body


def test_guard_rules_add_their_gates_to_a_declared_requirement() -> None:
    """A decorator's own requirement does not skip a rule's approval or cost."""
    clock = FakeClock()
    guard = Guard(MemoryStore(clock=clock), rules=crm_rules(cost=7), clock=clock)
    assert guard.permissions.rules  # the rules exist: the merge is what is tested next
    from agentguard import Level, Requirement
    from agentguard._gates import with_rule_gates
    from agentguard._request import GuardRequest

    declared = Requirement("crm", Level.WRITE)
    merged = with_rule_gates(guard.permissions, GuardRequest("POST", "/crm/x"), declared)
    assert merged.approval and merged.cost == 7
    elsewhere = GuardRequest("GET", "/elsewhere")
    assert with_rule_gates(guard.permissions, elsewhere, declared) == declared


async def test_headers_that_change_the_call_are_bound_and_shown(world: World) -> None:
    """An account-switching header added after approval is another call; per-attempt headers
    (tracing, user agent, idempotency keys) may change freely."""
    account = {"Stripe-Account": "acct_mine"}
    async with world.client() as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/pay")
    store = world.guard.approval_store
    assert store is not None
    record = await store.get_approval(approval_id)
    assert record is not None and "stripe-account" not in record.headers
    await approve(world.guard, approval_id)
    async with world.client() as client:
        swapped = await client.post("/crm/pay", headers=world.alice.auth(approval_id, **account))
        refusal(swapped, 403, "approval_invalid", "approval_mismatch")
        volatile = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                    "User-Agent": "other/1.0", "Idempotency-Key": "fresh"}  # fmt: skip
        ran = await client.post("/crm/pay", headers=world.alice.auth(approval_id, **volatile))
        assert ran.status_code == 200, ran.text
        held = await hold(client, world.alice, "POST", "/crm/other")
    assert held
    async with world.client() as client:
        response = await client.post("/crm/acct", headers=world.alice.auth(**account))
    shown = await store.get_approval(response.json()["approval_id"])
    assert shown is not None and "stripe-account: acct_mine" in shown.headers
