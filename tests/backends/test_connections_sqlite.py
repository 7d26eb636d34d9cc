"""SQLiteStore's connected accounts (connections, connect flows, leases) on real database files.

The races fire their calls at two SQLiteStores on one file (two connections, as two processes
have); the schema tests upgrade a version 4 file and look at how the rows are stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agentguard._model import FlowKind
from agentguard.errors import CorruptRecord
from agentguard.storage import StorageError
from agentguard.storage._gate_rows import GateCodec
from agentguard.storage._sqlite import SQLiteStore
from agentguard.storage._sqlite import schema as sqlite_schema
from agentguard.storage._sqlite._gate_queries import APPROVAL_INSERT
from agentguard.storage._sqlite._rows import from_micros, micros
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record
from agentguard.testing.conformance._approvals import approval_record
from agentguard.testing.conformance._connect_flows import flow_record
from agentguard.testing.conformance._connections import connection_record, refreshed
from tests.backends import connection_races
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


def _rows(db: Path, statement: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(statement).fetchall()
    finally:
        connection.close()


# Races between two stores on one file


async def test_racing_refreshes_of_one_connection_have_one_winner(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await connection_races.updates_have_one_winner(*two, clock)


async def test_racing_callbacks_with_one_state_have_one_winner(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await connection_races.takes_have_one_winner(*two, clock)


async def test_racing_refreshers_hold_one_lease(
    two: tuple[SQLiteStore, SQLiteStore], clock: FakeClock
) -> None:
    await connection_races.leases_have_one_holder(*two, clock)


# How rows are stored


async def test_ciphertexts_are_blobs_and_times_integer_microseconds(
    db: Path, clock: FakeClock
) -> None:
    clock.advance(timedelta(microseconds=123457))
    async with SQLiteStore(db, clock=clock) as store:
        record = connection_record(clock)
        await store.put_connection(record)
        flow = flow_record(clock)
        await store.put_flow(flow)
        now = clock.now()
        assert await store.acquire_lease("l", holder="h", now=now, until=now)
    kinds = _rows(
        db,
        "SELECT typeof(access_token), typeof(refresh_token), typeof(created_at), created_at,"
        " scopes FROM connections",
    )
    assert kinds == [
        ("blob", "blob", "integer", micros(record.created_at), '["contacts.read","contacts.write"]')
    ]
    flows = _rows(db, "SELECT typeof(token_hash), typeof(verifier), expires_at FROM connect_flows")
    assert flows == [("blob", "blob", micros(flow.expires_at))]
    assert _rows(db, "SELECT holder, until FROM leases") == [("h", micros(now))]


async def test_a_flow_store_forgets_expired_flows_when_it_stores_one(
    db: Path, clock: FakeClock
) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        expiring = flow_record(clock, ttl=timedelta(seconds=10))
        live = flow_record(clock, ttl=timedelta(minutes=10))
        for record in (expiring, live):
            await store.put_flow(record)
        clock.advance(10)  # ``expiring`` ends exactly now
        await store.put_flow(flow_record(clock))
        assert len(_rows(db, "SELECT id FROM connect_flows")) == 2
        assert (expiring.id,) not in _rows(db, "SELECT id FROM connect_flows")
        assert await store.take_flow(live.token_hash, kind=live.kind, now=clock.now()) == live


async def test_an_expired_flow_found_is_removed(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        record = flow_record(clock)
        await store.put_flow(record)
        assert (
            await store.take_flow(record.token_hash, kind=record.kind, now=record.expires_at)
            is None
        )
        assert _rows(db, "SELECT id FROM connect_flows") == []


async def test_an_unknown_token_is_answered_without_the_write_lock(
    db: Path, clock: FakeClock
) -> None:
    """A flood of made-up states costs a read each, never a write transaction: with another
    connection holding the write lock, looking one up still answers at once."""
    async with SQLiteStore(db, clock=clock, timeout=0.2) as store:
        record = flow_record(clock)
        await store.put_flow(record)
        unknown = flow_record(clock).token_hash
        writer = sqlite3.connect(db, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            now = clock.now()
            assert await store.take_flow(unknown, kind=record.kind, now=now) is None
            assert await store.peek_flow(record.token_hash, kind=record.kind, now=now) == record
            with pytest.raises(StorageError):  # a real take does need the lock, and waits
                await store.take_flow(record.token_hash, kind=record.kind, now=now)
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        assert await store.take_flow(record.token_hash, kind=record.kind, now=clock.now()) == record


async def test_naive_datetimes_are_refused_before_anything_changes(
    db: Path, clock: FakeClock
) -> None:
    naive = datetime(2026, 1, 1)
    async with SQLiteStore(db, clock=clock) as store:
        record = flow_record(clock)
        await store.put_flow(record)
        with pytest.raises(ValueError, match=r"naive|timezone"):
            await store.take_flow(record.token_hash, kind=record.kind, now=naive)
        with pytest.raises(ValueError, match=r"naive|timezone"):
            await store.acquire_lease("l", holder="h", now=naive, until=clock.now())
        assert await store.take_flow(record.token_hash, kind=record.kind, now=clock.now()) == record


async def test_rows_edited_outside_agentguard_read_as_corrupt(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        record = connection_record(clock)
        await store.put_connection(record)
        flow = flow_record(clock, kind=FlowKind.TICKET)
        await store.put_flow(flow)
        connection = sqlite3.connect(db, isolation_level=None)
        try:
            connection.execute("UPDATE connections SET scopes = 'not json'")
            connection.execute("UPDATE connect_flows SET service = '-not an id'")
        finally:
            connection.close()
        with pytest.raises(CorruptRecord, match="connected account"):
            await store.get_connection("crm", "alice")
        with pytest.raises(CorruptRecord, match="connected account"):
            await store.list_connections()
        with pytest.raises(CorruptRecord, match="connect flow"):
            await store.take_flow(flow.token_hash, kind=FlowKind.TICKET, now=clock.now())


async def test_the_schema_refuses_what_no_record_can_hold(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        await store.put_connection(connection_record(clock))
        await store.put_flow(flow_record(clock))
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in (
            "UPDATE connections SET status = 'paused'",
            "UPDATE connections SET version = 0",
            "UPDATE connect_flows SET kind = 'other'",
            "UPDATE connect_flows SET token_hash = x'00'",
        ):
            with pytest.raises(sqlite3.IntegrityError):
                connection.execute(statement)
    finally:
        connection.close()


# Schema version 5


def _version_4(path: Path, clock: FakeClock) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for version in (1, 2, 3, 4):
            for statement in sqlite_schema._MIGRATIONS[version]:
                connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (4)")
        insert_pre_audience_key(connection, key_record(clock))
        codec = GateCodec(micros, from_micros)
        connection.execute(APPROVAL_INSERT, codec.approval_params(approval_record(clock)))
    finally:
        connection.close()


async def test_version_4_upgrades_to_connected_accounts(db: Path, clock: FakeClock) -> None:
    _version_4(db, clock)
    async with SQLiteStore(db, clock=clock) as store:
        assert len(await store.list_keys()) == 1
        assert len(await store.list_approvals()) == 1
        record = connection_record(clock)
        await store.put_connection(record)
        assert await store.update_connection(refreshed(record, clock), version=1)
        assert [c.version for c in await store.list_connections()] == [2]
        flow = flow_record(clock)
        await store.put_flow(flow)
        assert await store.take_flow(flow.token_hash, kind=flow.kind, now=clock.now()) == flow
        now = clock.now()
        assert await store.acquire_lease("l", holder="h", now=now, until=now)
        assert await store.release_lease("l", holder="h")
        assert await store.delete_connection("crm", "alice") is not None
    versions = _rows(db, "SELECT version FROM schema_version")
    assert versions == [(sqlite_schema.SCHEMA_VERSION,)] == [(6,)]


async def test_version_4_read_only_asks_for_an_upgrade(db: Path, clock: FakeClock) -> None:
    _version_4(db, clock)
    store = SQLiteStore(db, clock=clock, read_only=True)
    with pytest.raises(StorageError, match=r"schema version 4, older .*agentguard db upgrade"):
        await store.initialize()
    await store.close()
