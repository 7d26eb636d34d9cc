"""Tampering with a real SQLite audit log, by someone who can drop its triggers, is detected."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agentguard.audit import (
    Action,
    AuditEvent,
    Category,
    Checkpointer,
    Ed25519Signer,
    MemoryCheckpointSink,
    verify_log,
)
from agentguard.audit._chain import seal
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock

ORIGIN = "audit.test/agentguard"
SIGNER = Ed25519Signer.generate("audit.test")


def build(path: Path, count: int = 30, checkpoint_at: int | None = None) -> list[str]:
    """A log of ``count`` events in a SQLite file; a signed checkpoint at ``checkpoint_at``."""

    async def main() -> list[str]:
        clock = FakeClock()
        sink = MemoryCheckpointSink()
        async with SQLiteStore(path, clock=clock) as store:
            checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink)
            for n in range(count):
                await store.append(
                    [AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/e/{n}")]
                )
                if checkpoint_at is not None and n + 1 == checkpoint_at:
                    await checkpointer.checkpoint()
            if checkpoint_at is None:
                await checkpointer.checkpoint()
        return await sink.notes()

    return anyio.run(main)


def tamper(path: Path, action: Callable[[sqlite3.Connection], object]) -> None:
    connection = sqlite3.connect(path)
    try:
        for name in ("audit_no_update", "audit_no_delete", "audit_extends_head"):
            connection.execute(f"DROP TRIGGER IF EXISTS {name}")
        action(connection)
        connection.commit()
    finally:
        connection.close()


def report_for(path: Path, notes: list[str]) -> tuple[Category | None, int | None]:
    async def read() -> list[object]:
        async with SQLiteStore(path) as store:
            return list(await store.read())

    report = verify_log(anyio.run(read), notes, [SIGNER.vkey()])  # type: ignore[arg-type]
    assert not report.ok
    assert report.first is not None
    return report.first.category, report.first.seq


def test_intact_log_verifies(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")

    async def read() -> list[object]:
        async with SQLiteStore(tmp_path / "a.db") as store:
            return list(await store.read())

    assert verify_log(anyio.run(read), notes, [SIGNER.vkey()]).ok  # type: ignore[arg-type]


def test_database_refuses_plain_edits(tmp_path: Path) -> None:
    build(tmp_path / "a.db", count=3)
    connection = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("UPDATE audit SET body = x'00' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM audit WHERE seq = 2")
    connection.close()


def test_modified_body_rewritten_as_text(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")
    tamper(
        tmp_path / "a.db",
        lambda db: db.execute("UPDATE audit SET body = CAST(body AS TEXT) WHERE seq = 3"),
    )

    # same characters, different SQLite type: harmless, and the reader must not crash on it
    async def read() -> list[object]:
        async with SQLiteStore(tmp_path / "a.db") as store:
            return list(await store.read())

    assert verify_log(anyio.run(read), notes, [SIGNER.vkey()]).ok  # type: ignore[arg-type]


def test_modified_body(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")
    tamper(
        tmp_path / "a.db",
        lambda db: db.execute(
            "UPDATE audit SET body = CAST(replace(body, '/e/12', '/e/99') AS BLOB) WHERE seq = 12"
        ),
    )
    assert report_for(tmp_path / "a.db", notes) == (Category.MODIFIED, 12)


def test_deleted_entry(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")
    tamper(tmp_path / "a.db", lambda db: db.execute("DELETE FROM audit WHERE seq = 7"))
    assert report_for(tmp_path / "a.db", notes) == (Category.MISSING, 7)


def test_inserted_entry(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")

    def insert(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT seq, prev, hash, body FROM audit ORDER BY seq").fetchall()
        db.execute("DELETE FROM audit")
        forged = seal(
            AuditEvent(action=Action.DECISION, ts=FakeClock().now(), path="/forged"), 5, rows[4][2]
        )
        shifted = [
            (seq + 1 if seq >= 5 else seq, prev, digest, body) for seq, prev, digest, body in rows
        ]
        shifted.append((5, b"\x01" * 32, forged.hash, forged.body))  # column prev must stay unique
        db.executemany("INSERT INTO audit (seq, prev, hash, body) VALUES (?, ?, ?, ?)", shifted)

    tamper(tmp_path / "a.db", insert)
    category, seq = report_for(tmp_path / "a.db", notes)
    assert seq is not None and seq <= 6
    assert category in (Category.INSERTED, Category.REORDERED, Category.MODIFIED)


def test_reordered_entries(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")

    def swap(db: sqlite3.Connection) -> None:
        db.execute("UPDATE audit SET seq = 1000000 WHERE seq = 10")
        db.execute("UPDATE audit SET seq = 10 WHERE seq = 11")
        db.execute("UPDATE audit SET seq = 11 WHERE seq = 1000000")

    tamper(tmp_path / "a.db", swap)
    assert report_for(tmp_path / "a.db", notes) == (Category.REORDERED, 10)


def test_truncated_below_checkpoint(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")
    tamper(tmp_path / "a.db", lambda db: db.execute("DELETE FROM audit WHERE seq >= 25"))
    category, _ = report_for(tmp_path / "a.db", notes)
    assert category is Category.TRUNCATED


def test_rollback_and_rewrite_is_a_fork(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db", count=30, checkpoint_at=30)

    def rewrite(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT seq, hash FROM audit WHERE seq < 20 ORDER BY seq").fetchall()
        db.execute("DELETE FROM audit WHERE seq >= 20")
        prev = rows[-1][1]
        for seq in range(20, 30):
            entry = seal(
                AuditEvent(action=Action.DECISION, ts=FakeClock().now(), path=f"/rewritten/{seq}"),
                seq,
                prev,
            )
            db.execute(
                "INSERT INTO audit (seq, prev, hash, body) VALUES (?, ?, ?, ?)",
                (seq, prev, entry.hash, entry.body),
            )
            prev = entry.hash

    tamper(tmp_path / "a.db", rewrite)
    category, _ = report_for(tmp_path / "a.db", notes)
    assert category is Category.FORK


def test_bad_checkpoint_signature(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db")
    forged = notes[-1].replace(notes[-1].split("\n")[1], "31", 1)

    async def read() -> list[object]:
        async with SQLiteStore(tmp_path / "a.db") as store:
            return list(await store.read())

    report = verify_log(anyio.run(read), [forged], [SIGNER.vkey()])  # type: ignore[arg-type]
    assert not report.ok
    assert report.first is not None and report.first.category is Category.BAD_SIGNATURE


def test_unanchored_tail_is_reported(tmp_path: Path) -> None:
    notes = build(tmp_path / "a.db", count=30, checkpoint_at=20)

    async def read() -> list[object]:
        async with SQLiteStore(tmp_path / "a.db") as store:
            return list(await store.read())

    report = verify_log(anyio.run(read), notes, [SIGNER.vkey()])  # type: ignore[arg-type]
    assert report.ok and report.anchored_size == 20
    assert any(f.category is Category.UNANCHORED_TAIL for f in report.findings)
