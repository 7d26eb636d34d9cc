"""Rate limits: GCRA exactly (``burst`` at once, then one per ``interval``), shared by two
instances, refused 429 ``rate_limited`` with ``Retry-After``, and counted, not logged one by
one, in the audit log."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from agentguard.limits import LimitScope, RateLimit
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.conftest import Instances
from tests.gates.support import audit_events, build_world, refusal

pytestmark = pytest.mark.anyio

# One call per 10 s on average, 3 at once.
LIMIT = RateLimit(
    "per-key", rate=1, period=timedelta(seconds=10), burst=3, per=LimitScope.KEY_FAMILY
)


async def test_burst_then_one_per_interval(clock: FakeClock) -> None:
    world = await build_world(MemoryStore(clock=clock), clock, rate_limits=[LIMIT])
    async with world.client() as client:

        async def call() -> int:
            return (await client.get("/crm/x", headers=world.alice.auth())).status_code

        assert [await call() for _ in range(4)] == [200, 200, 200, 429]
        refused = await client.get("/crm/x", headers=world.alice.auth())
        body = refusal(refused, 429, "rate_limited", "rate_limited")
        assert refused.headers["retry-after"] == "10" and body["limit"] == "per-key"
        clock.advance(9.5)
        assert await call() == 429
        clock.advance(0.5)
        assert [await call() for _ in range(2)] == [200, 429]
        clock.advance(30)  # a rested bucket holds no more than its burst
        assert [await call() for _ in range(4)] == [200, 200, 200, 429]
        other = await client.get("/crm/x", headers=world.alice2.auth())  # its own bucket
        assert other.status_code == 200


async def test_two_instances_share_one_bucket(instances: Instances) -> None:
    first, second = await instances.worlds(rate_limits=[LIMIT])
    for round_ in range(3):
        async with first.client() as one, second.client() as two:
            responses = await asyncio.gather(
                *(c.get("/crm/x", headers=first.alice.auth()) for c in (one, two) * 15)
            )
        assert Counter(r.status_code for r in responses) == {200: 3, 429: 27}, f"round {round_}"
        assert {r.headers["retry-after"] for r in responses if r.status_code == 429} == {"10"}
        instances.clock.advance(30)


async def test_held_calls_are_rate_limited_too(clock: FakeClock) -> None:
    world = await build_world(MemoryStore(clock=clock), clock, rate_limits=[LIMIT])
    async with world.client() as client:
        statuses = [
            (await client.post("/crm/x", headers=world.alice.auth(), content=b"x")).status_code
            for _ in range(4)
        ]
    assert statuses == [403, 403, 403, 429]


async def test_a_flood_of_refusals_is_summarised_in_the_audit_log(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    world = await build_world(store, clock, rate_limits=[LIMIT])
    async with world.client() as client:
        for _ in range(3):
            assert (await client.get("/crm/x", headers=world.alice.auth())).status_code == 200
        before = len(await store.read())
        for _ in range(1000):
            response = await client.get("/crm/x", headers=world.alice.auth())
            assert response.status_code == 429
    await world.guard.audit.flush()
    events = (await audit_events(store))[before:]
    assert len(events) < 10, Counter(e["action"] for e in events)
    summaries = [e for e in events if e["action"] == "guard.refusal_summary"]
    assert sum(int(e["detail"]["count"]) for e in summaries) == 1000
    assert all(e["reason"] == "rate_limited" for e in summaries)
    assert world.alice.key not in str(events)
