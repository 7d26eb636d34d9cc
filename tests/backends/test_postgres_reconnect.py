"""The pool recovers when the server cuts its connections: no new store needed."""

from __future__ import annotations

import asyncpg
import pytest

from agentguard.storage import PostgresStore, StorageError
from agentguard.storage._postgres.store import is_disconnect
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory

pytestmark = pytest.mark.anyio


async def _terminate_others(dsn: str) -> int:
    """Terminate every other backend on this database (the store's pooled connections)."""
    connection = await asyncpg.connect(dsn)
    try:
        killed = await connection.fetch(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND application_name = 'agentguard-reconnect-test'"""
        )
        return len(killed)
    finally:
        await connection.close()


async def test_store_recovers_after_its_connections_are_terminated(
    pg_schema: tuple[str, str], clock: FakeClock
) -> None:
    dsn, schema = pg_schema
    tagged = f"{dsn}{'&' if '?' in dsn else '?'}application_name=agentguard-reconnect-test"
    async with PostgresStore(tagged, clock=clock, schema=schema, pool_min=2) as store:
        await seed_directory(store)
        record = key_record(clock)
        await store.insert_keys([record])
        assert await _terminate_others(dsn) >= 1

        # Reads retry once on a cut connection, so they succeed straight away.
        found = await store.lookup(record.key_hash)
        assert found is not None and found.key.id == record.id

        assert await _terminate_others(dsn) >= 1
        # A write is never retried blindly: it may fail with a connection error, once.
        failure: Exception | None = None
        try:
            revoked = await store.revoke(key_id=record.id, reason="r", now=clock.now())
        except Exception as exc:
            failure = exc
            revoked = await store.revoke(key_id=record.id, reason="r", now=clock.now())
        # ...raised as StorageError, caused by the driver's disconnect.
        assert failure is None or (
            isinstance(failure, StorageError)
            and failure.__cause__ is not None
            and is_disconnect(failure.__cause__)
        ), failure
        assert revoked == 1
        found = await store.lookup(record.key_hash)
        assert found is not None and found.key.revoked_reason == "r"
        entries = await store.append([])
        assert entries == []
