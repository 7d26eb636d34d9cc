"""Races between two instances of one SQL backend on the gates, shared by both backends' tests.

Each scenario takes two stores over one database (two SQLiteStores on one file, two
PostgresStores with their own pools on one schema) and fires its calls at once with
``asyncio.gather``, so the calls interleave on the database; the assertions count winners.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Protocol

import pytest

from agentguard._model import ApprovalStatus
from agentguard.storage._gate_protocols import ApprovalStore, Charge, LimitStore, OperatorStore
from agentguard.storage._protocols import StorageError
from agentguard.testing import FakeClock
from agentguard.testing.conformance._approvals import approval_record
from agentguard.testing.conformance._operators import operator_record

__all__ = [
    "GateStore",
    "broken_calls_raise_storage_error",
    "charges_never_overspend",
    "consume_has_one_winner",
    "creates_share_one_approval",
    "takes_allow_exactly_burst",
]

ROUNDS = 20


class GateStore(ApprovalStore, OperatorStore, LimitStore, Protocol):
    """A store that implements every gate Protocol."""


async def consume_has_one_winner(first: GateStore, second: GateStore, clock: FakeClock) -> None:
    """Each round: one approved approval, four uses per instance at once; one runs."""
    for round_ in range(ROUNDS):
        record = approval_record(clock)
        await first.create_approval(record, now=clock.now())
        decided = await second.decide_approval(record.id, approve=True, by="op", now=clock.now())
        assert decided is not None
        uses = [
            store.consume_approval(record.id, binding=record.binding, now=clock.now())
            for store in (first, second) * 4
        ]
        results = await asyncio.gather(*uses)
        assert results.count(True) == 1, f"round {round_}: {results.count(True)} calls ran"
        for store in (first, second):
            stored = await store.get_approval(record.id)
            assert stored is not None and stored.status is ApprovalStatus.CONSUMED
            assert stored.consumed_at == clock.now()


async def creates_share_one_approval(first: GateStore, second: GateStore, clock: FakeClock) -> None:
    """Each round: the same held-back call sent eight times at once; one approval stands."""
    for round_ in range(ROUNDS):
        binding = secrets.token_hex(32)
        records = [approval_record(clock, binding=binding) for _ in range(8)]
        created = await asyncio.gather(
            *(
                store.create_approval(record, now=clock.now())
                for store, record in zip((first, second) * 4, records, strict=True)
            )
        )
        assert len({record.id for record in created}) == 1, f"round {round_}: {created}"
        stored = [r for r in await first.list_approvals(limit=1000) if r.binding == binding]
        assert [r.id for r in stored] == [created[0].id]


async def charges_never_overspend(first: GateStore, second: GateStore, clock: FakeClock) -> None:
    """Fifty charges of 3 against a limit of 40 at once, split over both instances."""
    counter, cost, limit = f"budget:{secrets.token_hex(4)}", 3, 40
    until = clock.now() + timedelta(hours=1)
    results = await asyncio.gather(
        *(
            store.charge(counter, cost=cost, limit=limit, expires_at=until)
            for store in (first, second) * 25
        )
    )
    allowed = sorted(result.used for result in results if result.allowed)
    assert len(allowed) == limit // cost
    assert allowed == list(range(cost, limit // cost * cost + 1, cost))
    assert all(result == Charge(False, 39) for result in results if not result.allowed)
    for store in (first, second):
        assert await store.charge(counter, cost=0, limit=limit, expires_at=until) == Charge(
            True, 39
        )


async def takes_allow_exactly_burst(first: GateStore, second: GateStore, clock: FakeClock) -> None:
    """Each round: thirty takes at once from a fresh bucket of burst 4; four pass."""
    for round_ in range(ROUNDS):
        bucket, now = f"rate:{secrets.token_hex(4)}", clock.now()
        results = await asyncio.gather(
            *(store.take(bucket, interval=2.5, burst=4, now=now) for store in (first, second) * 15)
        )
        assert sum(result.allowed for result in results) == 4, f"round {round_}: {results}"
        assert {result.retry_after for result in results if not result.allowed} == {2.5}


async def broken_calls_raise_storage_error(store: GateStore, clock: FakeClock) -> None:
    """Every gate method on a store whose driver fails: ``StorageError`` quoting no argument."""
    now = clock.now()
    record = approval_record(clock)
    operator = operator_record(clock)
    secret_names = (record.binding, operator.token_hash.hex(), "budget:secret-name", "rate:x-name")
    calls = [
        store.create_approval(record, now=now),
        store.get_approval(record.id),
        store.decide_approval(record.id, approve=True, by="op", now=now),
        store.consume_approval(record.id, binding=record.binding, now=now),
        store.list_approvals(),
        store.put_operator(operator),
        store.lookup_operator(operator.token_hash),
        store.revoke_operator(operator.id, now=now),
        store.list_operators(),
        store.charge("budget:secret-name", cost=1, limit=5, expires_at=now),
        store.take("rate:x-name", interval=1.0, burst=1, now=now),
    ]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            await call
        assert type(caught.value) is StorageError, f"{call!r}: {caught.value!r}"
        assert not any(name in str(caught.value) for name in secret_names), str(caught.value)
