"""PostgreSQL: a tampered log gets the same report through its raw rows as through ``read()``.

``verify_store`` reads a ``PostgresStore`` through ``read_rows`` (asyncpg records, checked a run
at a time). A superuser with the triggers off edits rows; the report must be the one
``verify_store`` gives over ``read()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from agentguard.audit import (
    Action,
    AuditEvent,
    Checkpointer,
    Ed25519Signer,
    MemoryCheckpointSink,
    VerifyReport,
)
from agentguard.audit._rows import exact_columns
from agentguard.audit._verify_store import verify_store
from agentguard.storage import PostgresStore
from agentguard.testing import FakeClock
from tests.backends.services import drop_schema, postgres_dsn, random_name
from tests.support.audit_logs import EntriesOnly, count_taken_pages

pytestmark = pytest.mark.anyio
ORIGIN = "audit.example.test/agentguard/pg-rows"
SIGNER = Ed25519Signer.generate(ORIGIN)
SIZE = 300


@pytest.fixture
async def location() -> AsyncIterator[tuple[str, str]]:
    dsn = await postgres_dsn()
    schema = random_name("agentguard_rows")
    try:
        yield dsn, schema
    finally:
        await drop_schema(dsn, schema)


# Each edit is SQL on the test's own random schema (no injection); $1 is a seq.
EDITS = {
    "intact": None,
    "body_byte": "UPDATE {s}.audit SET body = body || ' '::bytea WHERE seq = $1",
    "hash_wrong": "UPDATE {s}.audit SET hash = sha256(hash) WHERE seq = $1",
    "deleted": "DELETE FROM {s}.audit WHERE seq = $1",
    "moved": "UPDATE {s}.audit SET seq = seq + 1000 WHERE seq = $1",
    "rehashed": (  # a changed body with its hash recomputed: a valid leaf, a broken link
        "UPDATE {s}.audit SET body = convert_to(replace(convert_from(body, 'UTF8'), "
        "'GET', 'PUT'), 'UTF8'), hash = sha256('\\x00'::bytea || convert_to(replace("
        "convert_from(body, 'UTF8'), 'GET', 'PUT'), 'UTF8')) WHERE seq = $1"
    ),
}


async def edit(dsn: str, schema: str, statement: str, seq: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(f'ALTER TABLE "{schema}".audit DISABLE TRIGGER USER')
            await connection.execute(statement.format(s=f'"{schema}"'), seq)
            await connection.execute(f'ALTER TABLE "{schema}".audit ENABLE TRIGGER USER')
    finally:
        await connection.close()


@pytest.mark.parametrize("kind", sorted(EDITS))
async def test_postgres_rows_get_the_report_read_gives(
    location: tuple[str, str], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, schema = location
    clock = FakeClock()
    sink = MemoryCheckpointSink()
    async with PostgresStore(dsn, clock=clock, schema=schema) as store:
        await store.append(
            [
                AuditEvent(action=Action.DECISION, ts=clock.now(), method="GET", path=f"/{n}")
                for n in range(SIZE)
            ]
        )
        await Checkpointer(store, SIGNER, ORIGIN, sink).checkpoint()
        assert exact_columns(await store.read_rows(0, SIZE)) is not None
    statement = EDITS[kind]
    if statement is not None:
        await edit(dsn, schema, statement, 257)
    notes, vkeys = await sink.notes(), [SIGNER.vkey()]
    reports: list[VerifyReport] = []
    async with PostgresStore(dsn, clock=clock, schema=schema) as store:
        for page in (8192, 100):
            reports.append(await verify_store(store, notes, vkeys, origin=ORIGIN, page=page))
            reports.append(
                await verify_store(EntriesOnly(store), notes, vkeys, origin=ORIGIN, page=page)
            )
        # two worker processes computing pages of 64 ahead, each on its own connection
        url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
        taken = count_taken_pages(monkeypatch)
        reports.append(
            await verify_store(store, notes, vkeys, origin=ORIGIN, page=64, jobs=2, url=url)
        )
    assert all(report == reports[0] for report in reports)
    assert reports[0].ok == (kind == "intact")
    assert len(taken) >= 3  # the workers' pages were used (those before the edit at least)
