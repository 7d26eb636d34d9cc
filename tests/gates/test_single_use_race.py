"""One approval, one call: two instances racing the same approved call, round after round.

Two guards on two store instances over one database (memory backing, SQLite file, PostgreSQL
schema) each get the approved retry several times at once; exactly one runs, every other is
403 ``approval_used``, and the app behind them sees exactly one call per round.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.gates.conftest import Instances
from tests.gates.support import approve, hold

pytestmark = pytest.mark.anyio

ROUNDS = 12
PER_INSTANCE = 3


async def test_an_approval_runs_once_across_two_instances(instances: Instances) -> None:
    first, second = await instances.worlds()
    clients = [first.client(), second.client()]
    try:
        for round_ in range(ROUNDS):
            url, body = f"/crm/orders/{round_}", b"order %d" % round_
            approval_id = await hold(clients[round_ % 2], first.alice, "DELETE", url, body)
            await approve((first, second)[round_ % 2].guard, approval_id)
            headers = first.alice.auth(approval_id)
            responses = await asyncio.gather(
                *(
                    client.request("DELETE", url, headers=headers, content=body)
                    for client in clients * PER_INSTANCE
                )
            )
            outcomes = Counter(
                (r.status_code, r.json().get("reason") if r.status_code != 200 else None)
                for r in responses
            )
            assert outcomes == {(200, None): 1, (403, "approval_used"): 2 * PER_INSTANCE - 1}, (
                f"round {round_}: {outcomes}"
            )
            ran = [call for call in first.recorder.calls if call.path == url]
            assert [call.body for call in ran] == [body], f"round {round_}"
    finally:
        for client in clients:
            await client.aclose()


async def test_the_same_call_held_on_two_instances_is_one_approval(instances: Instances) -> None:
    first, second = await instances.worlds()
    async with first.client() as one, second.client() as two:
        responses = await asyncio.gather(
            *(
                client.request("DELETE", "/crm/orders/x", headers=first.alice.auth(), content=b"x")
                for client in (one, two) * 4
            )
        )
    assert {r.status_code for r in responses} == {403}
    assert len({r.json()["approval_id"] for r in responses}) == 1
    reasons = Counter(r.json()["reason"] for r in responses)
    assert reasons == {"approval_required": 1, "approval_pending": 7}
