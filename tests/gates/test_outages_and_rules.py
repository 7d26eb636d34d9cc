"""A failing approval or limit store refuses (503, audited), never lets a call through and
never answers 500; and rules that disagree about a path apply every gate of every reading."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agentguard import RouteRule
from agentguard.limits import Budget, RateLimit
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from agentguard.testing._faults import FaultyStore
from tests.gates.support import audit_events, build_world, held_and_approved, hold

pytestmark = pytest.mark.anyio

LIMITS: dict[str, Any] = {
    "budgets": [Budget("b", limit=100, window=timedelta(days=1))],
    "rate_limits": [RateLimit("r", rate=100, burst=100)],
}


@pytest.mark.parametrize(
    ("method", "stage"),
    [
        ("create_approval", "hold"),
        ("get_approval", "retry"),
        ("consume_approval", "retry"),
        ("charge", "retry"),
        ("take", "hold"),
    ],
)
async def test_a_failing_gate_store_refuses_503_and_is_audited(
    clock: FakeClock, method: str, stage: str
) -> None:
    faulty = FaultyStore(MemoryStore(clock=clock))
    world = await build_world(faulty, clock, **LIMITS)
    async with world.client() as client:
        approval_id = None
        if stage == "retry":
            approval_id = await held_and_approved(world, client, "POST", "/crm/o", b"b")
        faulty.fail(method)
        response = await client.post(
            "/crm/o",
            headers={**world.alice.auth(approval_id), "X-Request-Id": f"outage-{method}"},
            content=b"b",
        )
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert faulty.injected[method] == 1
        assert world.recorder.calls == []
        faulty.heal()
    events = [
        e for e in await audit_events(faulty.store) if e.get("request_id") == f"outage-{method}"
    ]
    refused = [e for e in events if e.get("decision") == "deny"]
    assert refused, f"the 503 of {method} was not audited: {events}"


async def test_every_reading_of_a_path_brings_its_gates(clock: FakeClock) -> None:
    """``/crm/Admin`` holds everything for approval; ``/crm/admin`` (another case) is read under
    both rules, so it is held too, and charged the larger cost."""
    rules = [
        RouteRule("/crm", "crm", cost=1),
        RouteRule("/crm/Admin", "crm", approval=True, cost=7),
    ]
    world = await build_world(MemoryStore(clock=clock), clock, rules)
    requirement = world.guard.permissions.requirement("GET", "/crm/admin/users")
    assert requirement is not None and requirement.approval and requirement.cost == 7
    async with world.client() as client:
        await hold(client, world.alice, "GET", "/crm/admin/users")
        assert (await client.get("/crm/other", headers=world.alice.auth())).status_code == 200
    assert [c.path for c in world.recorder.calls] == ["/crm/other"]
