"""SQLiteStore's gates (approvals, operators, budgets, rate limits) on real database files.

The gate contracts run with two SQLiteStores on one file (two connections, as two processes
have); the races fire their calls at both at once; the schema tests upgrade a version 3 file.
"""

# SQL here is the test's own, on its own temporary database files.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from agentguard._model import ApprovalStatus
from agentguard.errors import CorruptRecord
from agentguard.storage import StorageError
from agentguard.storage._gate_protocols import Charge, RateDecision
from agentguard.storage._sqlite import SQLiteStore
from agentguard.storage._sqlite import schema as sqlite_schema
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    key_record,
)
from agentguard.testing.conformance._approvals import approval_record
from agentguard.testing.conformance._operators import operator_record
from tests.backends import gate_races
from tests.backends.old_schema import insert_pre_audience_key

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agentguard.db"


@pytest.fixture
async def two(db: Path, clock: FakeClock) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    async with (
        SQLiteStore(db, clock=clock) as first,
        SQLiteStore(db, clock=clock) as second,
    ):
        yield first, second


# Races between two stores on one file


async def test_racing_uses_of_one_approval_run_one_call(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await gate_races.consume_has_one_winner(*two, clock)


async def test_racing_creations_of_one_call_share_one_approval(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await gate_races.creates_share_one_approval(*two, clock)


async def test_fifty_racing_charges_never_overspend(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await gate_races.charges_never_overspend(*two, clock)


async def test_racing_takes_from_a_fresh_bucket_allow_exactly_burst(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await gate_races.takes_allow_exactly_burst(*two, clock)


# Forgetting, checks, failures


def _names(db: Path, table: str) -> set[str]:
    connection = sqlite3.connect(db)
    try:
        return {row[0] for row in connection.execute(f"SELECT name FROM {table}")}
    finally:
        connection.close()


async def test_take_forgets_buckets_whose_tat_has_passed(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        now = clock.now()
        assert (await store.take("short", interval=1.0, burst=1, now=now)).allowed
        assert (await store.take("long", interval=60.0, burst=1, now=now)).allowed
        later = now + timedelta(seconds=1)  # short's tat, not long's
        assert (await store.take("third", interval=1.0, burst=1, now=later)).allowed
        assert _names(db, "rate_buckets") == {"long", "third"}
        refused = await store.take("long", interval=60.0, burst=1, now=later)
        assert refused == RateDecision(False, 59.0)


async def test_charge_forgets_other_ended_windows_by_the_store_clock(
    db: Path, clock: FakeClock
) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        start = clock.now()
        ends = start + timedelta(seconds=10)
        for name in ("ended", "charged"):
            assert await store.charge(name, cost=2, limit=5, expires_at=ends) == Charge(True, 2)
        live = start + timedelta(hours=1)
        assert await store.charge("live", cost=1, limit=5, expires_at=live) == Charge(True, 1)
        clock.advance(10)  # the window's end itself: not yet forgotten
        assert await store.charge("x", cost=0, limit=5, expires_at=live) == Charge(True, 0)
        assert _names(db, "limit_counters") == {"ended", "charged", "live"}
        clock.advance(1)
        # the counter being charged is never forgotten by its own call
        assert await store.charge("charged", cost=3, limit=5, expires_at=ends) == Charge(True, 5)
        assert _names(db, "limit_counters") == {"charged", "live"}


async def test_bad_arguments_are_refused_before_anything_changes(
    db: Path, clock: FakeClock
) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        now = clock.now()
        with pytest.raises(ValueError, match="cost"):
            await store.charge("c", cost=-1, limit=5, expires_at=now)
        for interval, burst in ((0.0, 1), (1e-7, 1), (1.0, 0)):
            with pytest.raises(ValueError, match=r"interval|burst"):
                await store.take("b", interval=interval, burst=burst, now=now)
        record = approval_record(clock)
        await store.create_approval(record, now=now)
        with pytest.raises(ValueError, match="128"):
            await store.decide_approval(record.id, approve=True, by="x" * 129, now=now)
        assert await store.get_approval(record.id) == record
        assert _names(db, "limit_counters") == set()
        assert _names(db, "rate_buckets") == set()


async def test_a_row_edited_outside_agentguard_reads_as_corrupt(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        record = approval_record(clock)
        await store.create_approval(record, now=clock.now())
        operator = operator_record(clock)
        await store.put_operator(operator)
        connection = sqlite3.connect(db, isolation_level=None)
        try:
            connection.execute("UPDATE approvals SET binding = 'not hex'")
            connection.execute("UPDATE operators SET token_hash = x'00'")
        finally:
            connection.close()
        with pytest.raises(CorruptRecord, match="approval"):
            await store.get_approval(record.id)
        with pytest.raises(CorruptRecord, match="operator"):
            await store.list_operators()


async def test_a_broken_connection_raises_storage_error_from_every_gate_method(
    db: Path, clock: FakeClock
) -> None:
    store = SQLiteStore(db, clock=clock)
    await store.initialize()
    assert store._connection is not None
    store._connection.close()
    try:
        await gate_races.broken_calls_raise_storage_error(store, clock)
    finally:
        await store.close()


# Schema version 4


def _version_3(path: Path, clock: FakeClock) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for version in (1, 2, 3):
            for statement in sqlite_schema._MIGRATIONS[version]:
                connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (3)")
        insert_pre_audience_key(connection, key_record(clock))
    finally:
        connection.close()


async def test_version_3_upgrades_to_the_gate_tables(db: Path, clock: FakeClock) -> None:
    _version_3(db, clock)
    async with SQLiteStore(db, clock=clock) as store:
        assert len(await store.list_keys()) == 1
        record = approval_record(clock)
        assert await store.create_approval(record, now=clock.now()) == record
        decided = await store.decide_approval(record.id, approve=True, by="op", now=clock.now())
        assert decided is not None and decided.status is ApprovalStatus.APPROVED
        operator = operator_record(clock)
        await store.put_operator(operator)
        assert await store.list_operators() == [operator]
        until = clock.now() + timedelta(hours=1)
        assert await store.charge("c", cost=1, limit=1, expires_at=until) == Charge(True, 1)
        assert (await store.take("b", interval=1.0, burst=1, now=clock.now())).allowed
    connection = sqlite3.connect(db)
    try:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
    finally:
        connection.close()
    assert versions == [(sqlite_schema.SCHEMA_VERSION,)]  # 4 or later: every migration ran


async def test_version_3_read_only_asks_for_an_upgrade(db: Path, clock: FakeClock) -> None:
    _version_3(db, clock)
    store = SQLiteStore(db, clock=clock, read_only=True)
    with pytest.raises(StorageError, match=r"schema version 3, older .*agentguard db upgrade"):
        await store.initialize()
    await store.close()
