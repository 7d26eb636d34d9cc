"""Budgets: never overspent, refused with the window's reset, charged per method, and charged
for a call held for approval only once its approval is used."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import timedelta

import pytest
from starlette.routing import Mount, Router

from agentguard.asgi import AgentGuardMiddleware, OAuthApp
from agentguard.limits import Budget, LimitScope
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.conftest import Instances
from tests.gates.support import (
    approve,
    build_world,
    crm_rules,
    held_and_approved,
    hold,
    issue,
    refusal,
)

pytestmark = pytest.mark.anyio

DAY = timedelta(days=1)
OFFSET = 1000.25  # seconds after the clock's midnight start: Retry-After is the rest of the day


def _daily(limit: int, service: str | None = "crm") -> list[Budget]:
    return [Budget("crm-daily", limit=limit, window=DAY, per=LimitScope.USER, service=service)]


async def test_fifty_calls_at_once_on_two_instances_never_overspend(
    instances: Instances, clock: FakeClock
) -> None:
    clock.advance(OFFSET)
    first, second = await instances.worlds(budgets=_daily(20))
    async with first.client() as one, second.client() as two:
        responses = await asyncio.gather(
            *(
                c.get(f"/crm/c/{n}", headers=first.alice.auth())
                for n, c in enumerate((one, two) * 25)
            )
        )
    assert Counter(r.status_code for r in responses) == {200: 20, 429: 30}
    assert len(first.recorder.calls) == 20
    expected_wait = str(math.ceil(86400 - OFFSET))
    for response in responses:
        if response.status_code == 429:
            body = refusal(response, 429, "budget_exhausted", "budget_exhausted")
            assert response.headers["retry-after"] == expected_wait
            assert body["reset_at"] == "2026-01-02T00:00:00Z" and body["budget"] == "crm-daily"
    clock.advance(DAY)  # the next window is whole again (with a key that has not expired)
    fresh = await issue(second.guard, "alice")
    async with second.client() as two:
        assert (await two.get("/crm/c/again", headers=fresh.auth())).status_code == 200


async def test_a_budget_counts_per_subject(clock: FakeClock) -> None:
    world = await build_world(MemoryStore(clock=clock), clock, budgets=_daily(1))
    async with world.client() as client:
        assert (await client.get("/crm/a", headers=world.alice.auth())).status_code == 200
        assert (await client.get("/crm/a", headers=world.alice2.auth())).status_code == 429
        assert (await client.get("/crm/a", headers=world.bob.auth())).status_code == 200


async def test_costs_are_charged_per_method(clock: FakeClock) -> None:
    rules = crm_rules(cost={"POST": 5}, approval=False)
    world = await build_world(MemoryStore(clock=clock), clock, rules, budgets=_daily(12))
    async with world.client() as client:
        statuses = [
            (await client.request(method, "/crm/x", headers=world.alice.auth())).status_code
            for method in ("POST", "POST", "POST", "GET", "GET", "GET")
        ]
    assert statuses == [200, 200, 429, 200, 200, 429]


async def test_a_held_call_is_charged_only_when_its_approval_is_used(clock: FakeClock) -> None:
    world = await build_world(MemoryStore(clock=clock), clock, budgets=_daily(1))
    async with world.client() as client:
        for _ in range(3):  # pending: held, again, named while pending
            await client.post("/crm/x", headers=world.alice.auth(), content=b"1")
        denied = await hold(client, world.alice, "POST", "/crm/denied", b"2")
        await approve(world.guard, denied, yes=False)
        refusal(
            await client.post("/crm/denied", headers=world.alice.auth(denied), content=b"2"),
            403, "approval_invalid", "approval_denied",
        )  # fmt: skip
        approval_id = await held_and_approved(world, client, "POST", "/crm/y", b"3")
        mismatch = await client.post("/crm/y", headers=world.alice.auth(approval_id), content=b"4")
        refusal(mismatch, 403, "approval_invalid", "approval_mismatch")
        ran = await client.post("/crm/y", headers=world.alice.auth(approval_id), content=b"3")
        assert ran.status_code == 200, ran.text
        spent = await client.get("/crm/z", headers=world.alice.auth())
    refusal(spent, 429, "budget_exhausted", "budget_exhausted")


async def test_polling_an_approval_spends_no_budget(clock: FakeClock) -> None:
    world = await build_world(MemoryStore(clock=clock), clock, budgets=_daily(1, service=None))
    router = Router([
        Mount("/oauth", app=OAuthApp(world.guard)),
        Mount("/", app=AgentGuardMiddleware(world.recorder, world.guard)),
    ])  # fmt: skip
    async with world.client(router) as client:
        approval_id = await hold(client, world.alice, "POST", "/crm/y", b"3")
        for _ in range(3):
            poll = await client.get(f"/oauth/approvals/{approval_id}", headers=world.alice.auth())
            assert poll.status_code == 200 and poll.json()["state"] == "pending"
        await approve(world.guard, approval_id)
        ran = await client.post("/crm/y", headers=world.alice.auth(approval_id), content=b"3")
    assert ran.status_code == 200, ran.text
