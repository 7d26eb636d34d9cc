"""Races between two instances of one SQL backend on connected accounts, for both backends.

Each scenario takes two stores over one database (two SQLiteStores on one file, two
PostgresStores with their own pools on one schema) and fires its calls at once with
``asyncio.gather``, round after round, so the calls interleave on the database; the assertions
count winners. The conformance contract races once; these race many times.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Protocol

from agentguard.storage import ConnectFlowStore, ConnectionStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance._connect_flows import flow_record
from agentguard.testing.conformance._connections import connection_record, refreshed

__all__ = [
    "AccountStore",
    "leases_have_one_holder",
    "takes_have_one_winner",
    "updates_have_one_winner",
]

ROUNDS = 20
PER_INSTANCE = 4


class AccountStore(ConnectionStore, ConnectFlowStore, Protocol):
    """A store of connected accounts."""


async def updates_have_one_winner(
    first: AccountStore, second: AccountStore, clock: FakeClock
) -> None:
    """Each round: eight refreshes from the version just written; one lands, and its tokens
    are the ones stored (no rotated refresh token is lost to a blind overwrite)."""
    record = connection_record(clock)
    await first.put_connection(record)
    for round_ in range(ROUNDS):
        clock.advance(1)
        candidates = [refreshed(record, clock) for _ in range(2 * PER_INSTANCE)]
        stores = (first, second) * PER_INSTANCE
        updates = [
            store.update_connection(candidate, version=record.version)
            for store, candidate in zip(stores, candidates, strict=True)
        ]
        won = await asyncio.gather(*updates)
        assert won.count(True) == 1, f"round {round_}: {won.count(True)} updates won"
        record = candidates[won.index(True)]
        for store in (first, second):
            assert await store.get_connection(record.service, record.user_id) == record


async def takes_have_one_winner(
    first: AccountStore, second: AccountStore, clock: FakeClock
) -> None:
    """Each round: one flow, eight callbacks at once; one gets it."""
    for round_ in range(ROUNDS):
        record = flow_record(clock)
        await (first if round_ % 2 else second).put_flow(record)
        takes = [
            store.take_flow(record.token_hash, kind=record.kind, now=clock.now())
            for store in (first, second) * PER_INSTANCE
        ]
        taken = [flow for flow in await asyncio.gather(*takes) if flow is not None]
        assert taken == [record], f"round {round_}: {len(taken)} takers got the flow"


async def leases_have_one_holder(
    first: AccountStore, second: AccountStore, clock: FakeClock
) -> None:
    """Each round, on one lease: eight holders race for it once the last term has run out."""
    name = "refresh:crm:alice"
    for round_ in range(ROUNDS):
        now = clock.now()
        until = now + timedelta(seconds=30)
        holders = [f"r{round_}.{n}" for n in range(2 * PER_INSTANCE)]
        stores = (first, second) * PER_INSTANCE
        acquires = [
            store.acquire_lease(name, holder=holder, now=now, until=until)
            for store, holder in zip(stores, holders, strict=True)
        ]
        granted = await asyncio.gather(*acquires)
        assert granted.count(True) == 1, f"round {round_}: {granted.count(True)} holders"
        holder = holders[granted.index(True)]
        if round_ % 2:  # half the rounds end by release, half by running out
            assert await second.release_lease(name, holder=holder)
        else:
            clock.advance(30)
