"""PostgresStore passes the archive contract; its triggers still guard the kept tail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentguard.audit import Checkpointer, Ed25519Signer, MemoryCheckpointSink
from agentguard.audit._archive import archive_to
from agentguard.storage import PostgresStore
from agentguard.storage._postgres.schema import quote_schema
from agentguard.testing import FakeClock
from agentguard.testing.conformance import AuditArchiveContract
from agentguard.testing.conformance._audit import audit_event


class TestPostgresArchive(AuditArchiveContract):
    store_type = PostgresStore

    @pytest.fixture
    async def store(
        self, pg_schema: tuple[str, str], clock: FakeClock
    ) -> AsyncIterator[PostgresStore]:
        dsn, schema = pg_schema
        async with PostgresStore(dsn, clock=clock, schema=schema) as store:
            yield store


@pytest.mark.anyio
async def test_kept_rows_stay_append_only_after_an_archive(
    pg_schema: tuple[str, str], clock: FakeClock, tmp_path: Path
) -> None:
    import asyncpg

    dsn, schema = pg_schema
    async with PostgresStore(dsn, clock=clock, schema=schema) as store:
        signer, sink = Ed25519Signer.generate("o"), MemoryCheckpointSink()
        await store.append([audit_event(clock, n) for n in range(6)])
        await Checkpointer(store, signer, "o", sink).checkpoint()
        await store.append([audit_event(clock, n) for n in range(6, 8)])
        notes = await sink.notes()
        await archive_to(store, tmp_path / "a", notes=notes, vkeys=[signer.vkey()], origin="o")
        connection = await asyncpg.connect(dsn)
        try:
            quoted = quote_schema(schema)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(f"DELETE FROM {quoted}.audit WHERE seq = 6")  # noqa: S608
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await connection.execute(
                    f"INSERT INTO {quoted}.audit VALUES (0, decode(repeat('00', 32), 'hex'),"  # noqa: S608
                    " 'x', 'x')"
                )
        finally:
            await connection.close()
        assert [e.seq for e in await store.read()] == [6, 7]
