"""PostgreSQL: a log rewritten as a restored snapshot would leave it is refused by the checkpointer,
and read-only CLI commands never create a schema.

The audit table refuses DELETE and TRUNCATE through triggers; a restore from an older dump (or a
superuser) gets around them. The test plays that superuser: triggers off, the tail deleted, the
head row moved back, triggers on again; then the application writes different events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from agentguard.audit import (
    Action,
    AuditEvent,
    Checkpointer,
    DirectoryCheckpointSink,
    Ed25519Signer,
    LogForked,
)
from agentguard.cli import main
from agentguard.storage import PostgresStore
from agentguard.testing import FakeClock
from tests.backends.services import drop_schema, postgres_dsn, random_name

pytestmark = pytest.mark.anyio
ORIGIN = "audit.example.test/agentguard/pg"


def events(count: int, tag: str) -> list[AuditEvent]:
    clock = FakeClock()
    return [
        AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/{tag}/{n}") for n in range(count)
    ]


async def roll_back(dsn: str, schema: str, keep: int) -> None:
    """Leave only the first ``keep`` entries, as restoring an older snapshot does."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(f'ALTER TABLE "{schema}".audit DISABLE TRIGGER USER')
            # the schema is the test's own random_name(): no injection
            delete = f'DELETE FROM "{schema}".audit WHERE seq >= $1'  # noqa: S608
            await connection.execute(delete, keep)
            head = (
                f'UPDATE "{schema}".audit_head SET seq = $1, hash = coalesce('  # noqa: S608
                f'(SELECT hash FROM "{schema}".audit WHERE seq = $1), '
                "decode(repeat('00', 32), 'hex'))"
            )
            await connection.execute(head, keep - 1)
            await connection.execute(f'ALTER TABLE "{schema}".audit ENABLE TRIGGER USER')
    finally:
        await connection.close()


@pytest.fixture
async def location() -> AsyncIterator[tuple[str, str]]:
    dsn = await postgres_dsn()
    schema = random_name("agentguard_fork")
    try:
        yield dsn, schema
    finally:
        await drop_schema(dsn, schema)


@pytest.mark.parametrize(("keep", "regrow"), [(0, 0), (5, 0), (5, 4), (5, 7), (9, 12)])
async def test_a_rolled_back_postgres_log_is_not_signed(
    location: tuple[str, str], tmp_path: Path, keep: int, regrow: int
) -> None:
    dsn, schema = location
    signer = Ed25519Signer.generate("audit.example.test")
    sink = DirectoryCheckpointSink(tmp_path / "checkpoints")
    async with PostgresStore(dsn, schema=schema) as store:
        await store.append(events(6, "a"))
        await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
        await store.append(events(6, "b"))
        await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
    await roll_back(dsn, schema, keep)
    notes = await sink.notes()
    async with PostgresStore(dsn, schema=schema) as store:
        if regrow:
            await store.append(events(regrow, "forked"))
        checkpointer = Checkpointer(store, signer, ORIGIN, sink)
        with pytest.raises(LogForked, match="12"):
            await checkpointer.checkpoint()
        assert not checkpointer.healthy
    assert await sink.notes() == notes


async def forge_head_hash(dsn: str, schema: str, seq: int, digest: bytes) -> None:
    """Set the stored hash of ``seq`` (and of the head row) to ``digest``, triggers off."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(f'ALTER TABLE "{schema}".audit DISABLE TRIGGER USER')
            # the schema is the test's own random_name(): no injection
            forged = f'UPDATE "{schema}".audit SET hash = $2 WHERE seq = $1'  # noqa: S608
            await connection.execute(forged, seq, digest)
            head = f'UPDATE "{schema}".audit_head SET hash = $1'  # noqa: S608
            await connection.execute(head, digest)
            await connection.execute(f'ALTER TABLE "{schema}".audit ENABLE TRIGGER USER')
    finally:
        await connection.close()


async def test_running_checkpointer_refuses_a_regrown_fork_with_the_old_head_hash(
    location: tuple[str, str], tmp_path: Path
) -> None:
    """Rolled back to 4 under a running checkpointer, regrown to the signed 8, head hash forged.

    Later events chain onto the forged hash; the checkpointer re-hashes the entry it read last
    from its body and refuses, at every round, instead of signing the fork.
    """
    dsn, schema = location
    signer = Ed25519Signer.generate("audit.example.test")
    sink = DirectoryCheckpointSink(tmp_path / "checkpoints")
    async with PostgresStore(dsn, schema=schema) as store:
        checkpointer = Checkpointer(store, signer, ORIGIN, sink)
        await store.append(events(8, "a"))
        await checkpointer.checkpoint()
        head = await store.head()
        assert head is not None
        await roll_back(dsn, schema, 4)
        await store.append(events(4, "forged"))
        await forge_head_hash(dsn, schema, 7, head.hash)
        notes = await sink.notes()
        for round_ in range(2):
            await store.append(events(3, f"after{round_}"))
            with pytest.raises(LogForked, match="seq 7 was replaced"):
                await checkpointer.checkpoint()
        assert not checkpointer.healthy
    assert await sink.notes() == notes


async def test_read_only_commands_never_create_a_postgres_schema(
    location: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, schema = location
    url = f"{dsn}?schema={schema}"
    commands = [
        ["audit", "verify", "--store", url],
        ["audit", "tail", "--store", url],
        ["audit", "export", "--store", url, "--out", str(tmp_path / "export")],
    ]
    for command in commands:
        code = await anyio.to_thread.run_sync(main, command)
        captured = capsys.readouterr()
        assert code == 2, (command, captured)
        assert "OK" not in captured.out
        assert "does not exist or has no agentguard tables" in captured.err, captured.err
        # One line naming the command that would create it (a typo shows as a new name);
        # the read-only command itself created nothing (checked below).
        assert captured.err.count("\n") == 1 and "agentguard db upgrade" in captured.err
    connection = await asyncpg.connect(dsn)
    try:
        exists = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
        )
    finally:
        await connection.close()
    assert not exists
