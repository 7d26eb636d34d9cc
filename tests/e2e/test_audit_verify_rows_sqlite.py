"""A tampered SQLite log gets the same report through its raw rows as through ``read()``.

``verify_store`` reads an SQL store through ``read_rows`` (the rows as the driver gives them,
checked a run at a time) when the store has it. Someone who can drop the audit triggers edits
the rows with sqlite3 directly: bodies, hashes, types, order, gaps. The report must be the one
``verify_store`` gives over ``read()`` (entries built per row), and the whole-log oracle's.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agentguard.audit import (
    Action,
    AuditEvent,
    Checkpointer,
    Decision,
    Ed25519Signer,
    MemoryCheckpointSink,
    VerifyReport,
)
from agentguard.audit._rows import exact_columns
from agentguard.audit._verify_store import verify_store
from agentguard.storage import SQLiteStore, StorageError
from agentguard.testing import FakeClock
from tests.support.audit_logs import EntriesOnly
from tests.support.verify_oracle import verify_log as oracle

ORIGIN = "audit.test/rows"
SIGNER = Ed25519Signer.generate(ORIGIN)
VKEYS = [SIGNER.vkey()]
SIZE = 620  # several runs of 256 rows; checkpoints inside runs and at their edges
CHECKPOINTS = (100, 256, 300, 513, SIZE)


def event(clock: FakeClock, n: int) -> AuditEvent:
    """Mostly template-shaped decisions; now and then an escape, non-ASCII or a detail."""
    path = f"/repos/acme/issues/{n}"
    if n % 97 == 5:
        path += "/é"
    elif n % 89 == 3:
        path += '/"quoted"'
    detail: dict[str, str | int | bool | None] = (
        {"note": "two\nlines", "n": n} if n % 83 == 7 else {}
    )
    return AuditEvent(
        action=Action.DECISION,
        ts=clock.now(),
        decision=Decision.ALLOW if n % 10 else Decision.DENY,
        method="GET",
        path=path,
        service="github",
        status=200,
        latency_us=800 + n,
        detail=detail,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A SQLite log of SIZE events with signed checkpoints; copied by each test."""
    path = tmp_path_factory.mktemp("rows") / "pristine.db"

    async def main() -> list[str]:
        clock = FakeClock()
        sink = MemoryCheckpointSink()
        async with SQLiteStore(path, clock=clock) as store:
            checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink)
            written = 0
            for size in CHECKPOINTS:
                await store.append([event(clock, n) for n in range(written, size)])
                written = size
                await checkpointer.checkpoint()
        return await sink.notes()

    return path, anyio.run(main)


def _rows(db: sqlite3.Connection, seq: int) -> tuple[bytes, bytes]:
    hash_, body = db.execute("SELECT hash, body FROM audit WHERE seq = ?", (seq,)).fetchone()
    return hash_, body


def _set(db: sqlite3.Connection, seq: int, column: str, value: object) -> None:
    db.execute(f"UPDATE audit SET {column} = ? WHERE seq = ?", (value, seq))  # noqa: S608


def _flip(db: sqlite3.Connection, seq: int, rehash: bool) -> None:
    _, body = _rows(db, seq)
    body = body.replace(b'"GET"', b'"PUT"', 1) if b'"GET"' in body else body + b" "
    _set(db, seq, "body", body)
    if rehash:
        _set(db, seq, "hash", hashlib.sha256(b"\x00" + body).digest())


def _swap(db: sqlite3.Connection, seq: int, other: int) -> None:
    other = other if other < SIZE else 2 * seq - other  # past the head: the other way
    first, second = _rows(db, seq), _rows(db, other)
    for at, (hash_, body) in ((seq, second), (other, first)):
        db.execute("UPDATE audit SET hash = ?, body = ? WHERE seq = ?", (hash_, body, at))


def _respace(db: sqlite3.Connection, seq: int) -> None:
    _, body = _rows(db, seq)
    body = body.replace(b",", b", ", 1)
    _set(db, seq, "body", body)
    _set(db, seq, "hash", hashlib.sha256(b"\x00" + body).digest())


Tamper = Callable[[sqlite3.Connection, int], object]

TAMPERS: dict[str, Tamper] = {
    "body_byte": lambda db, k: _flip(db, k, rehash=False),
    "body_byte_rehashed": lambda db, k: _flip(db, k, rehash=True),
    "body_as_text": lambda db, k: db.execute(
        "UPDATE audit SET body = CAST(body AS TEXT) WHERE seq = ?", (k,)
    ),
    "body_as_number": lambda db, k: _set(db, k, "body", 12345),
    "hash_as_text": lambda db, k: db.execute(
        "UPDATE audit SET hash = hex(hash) WHERE seq = ?", (k,)
    ),
    "hash_wrong": lambda db, k: _set(db, k, "hash", hashlib.sha256(b"forged").digest()),
    "hash_short": lambda db, k: db.execute(
        "UPDATE audit SET hash = substr(hash, 1, 31) WHERE seq = ?", (k,)
    ),
    "deleted": lambda db, k: db.execute("DELETE FROM audit WHERE seq = ?", (k,)),
    "swapped": lambda db, k: _swap(db, k, k + 1),
    "swapped_far": lambda db, k: _swap(db, k, k + 20),
    "moved_far": lambda db, k: db.execute("UPDATE audit SET seq = 1000000000 WHERE seq = ?", (k,)),
    "moved_back": lambda db, k: db.execute("UPDATE audit SET seq = seq + 2000 WHERE seq = ?", (k,)),
    "truncated": lambda db, k: db.execute("DELETE FROM audit WHERE seq >= ?", (k,)),
    "re_serialised": _respace,
    "duplicated": lambda db, k: db.execute(
        "INSERT INTO audit (seq, prev, hash, body) "
        "SELECT ?, randomblob(32), hash, body FROM audit WHERE seq = ?",
        (SIZE + 5, k),
    ),
}


def tampered(pristine: tuple[Path, list[str]], tmp_path: Path, kind: str, at: int) -> Path:
    path = tmp_path / "a.db"
    shutil.copy(pristine[0], path)
    db = sqlite3.connect(path)
    try:
        for name in ("audit_no_update", "audit_no_delete", "audit_extends_head"):
            db.execute(f"DROP TRIGGER IF EXISTS {name}")
        TAMPERS[kind](db, at)
        db.commit()
    finally:
        db.close()
    return path


def undecodable(path: Path, seq: int) -> Path:
    """``path`` with the body at ``seq`` made text that sqlite3 cannot decode as UTF-8."""
    db = sqlite3.connect(path)
    try:
        db.execute("UPDATE audit SET body = CAST(x'ff22' AS TEXT) WHERE seq = ?", (seq,))
        db.commit()
    finally:
        db.close()
    return path


def reports(path: Path, notes: list[str], page: int) -> tuple[VerifyReport, ...]:
    async def main() -> tuple[VerifyReport, ...]:
        async with SQLiteStore(path, read_only=True) as store:
            rows = await verify_store(store, notes, VKEYS, origin=ORIGIN, page=page)
            entries = await verify_store(EntriesOnly(store), notes, VKEYS, origin=ORIGIN, page=page)
            whole = oracle(await store.read(), notes, VKEYS, origin=ORIGIN)
        return rows, entries, whole

    return anyio.run(main)


def test_an_intact_log_s_rows_have_the_stored_types(pristine: tuple[Path, list[str]]) -> None:
    """sqlite3 gives (int, bytes, bytes): the rows take the run-at-a-time path."""

    async def main() -> list[tuple[object, ...]]:
        async with SQLiteStore(pristine[0], read_only=True) as store:
            return await store.read_rows(0, 300)

    rows = anyio.run(main)
    assert len(rows) == 300 and exact_columns(rows) is not None


@pytest.mark.parametrize("page", [8192, 100])
def test_an_intact_log_verifies_through_its_rows(
    pristine: tuple[Path, list[str]], page: int
) -> None:
    rows, entries, whole = reports(pristine[0], pristine[1], page)
    assert rows == entries == whole
    assert rows.ok and rows.anchored and rows.size == SIZE


@pytest.mark.parametrize("at", [0, 99, 255, 256, 300, SIZE - 21, SIZE - 2, SIZE - 1])
@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampered_rows_get_the_report_read_gives(
    pristine: tuple[Path, list[str]], tmp_path: Path, kind: str, at: int
) -> None:
    path = tampered(pristine, tmp_path, kind, at)
    for page in (8192, 100, 7):
        rows, entries, whole = reports(path, pristine[1], page)
        assert rows == entries == whole, (kind, at, page)
        # The same bytes as text: read() turns them back into those bytes, and so do the rows.
        assert rows.ok == (kind == "body_as_text")


def test_a_body_that_is_not_utf8_text_fails_alike(
    pristine: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Text sqlite3 cannot decode: both ways stop with the same storage error."""
    path = undecodable(tampered(pristine, tmp_path, "hash_wrong", 3), 4)

    async def main(wrap: bool) -> str:
        async with SQLiteStore(path, read_only=True) as store:
            target = EntriesOnly(store) if wrap else store
            with pytest.raises(StorageError) as caught:
                await verify_store(target, pristine[1], VKEYS, origin=ORIGIN)
        return str(caught.value)

    assert anyio.run(main, False) == anyio.run(main, True)
