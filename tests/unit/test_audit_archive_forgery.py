"""Someone with write access to the database or the archive cannot pass off a forgery.

Found by an operator's attack: a hand-made ``audit_archive`` row let every signed row be
deleted behind a warning, and an archive directory without its notes verified alone.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest

from agentguard.audit import Checkpointer, DirectoryCheckpointSink, Ed25519Signer
from agentguard.audit._prefix import extend_prefix
from agentguard.cli import main
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance._audit import audit_event

ORIGIN = "audit.example.test/agentguard"


async def _seed(db: Path, checkpoints: Path, signer: Ed25519Signer) -> None:
    """40 events, a checkpoint at 30, then 10 more events."""
    clock = FakeClock()
    async with SQLiteStore(db, clock=clock) as store:
        await store.append([audit_event(clock, n) for n in range(30)])
        await Checkpointer(store, signer, ORIGIN, DirectoryCheckpointSink(checkpoints)).checkpoint()
        await store.append([audit_event(clock, n) for n in range(30, 40)])


def _forge(db: Path, size: int, *, garbage: bool) -> None:
    """What an attacker with the database does: record a prefix by hand, delete below it."""
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute("SELECT hash FROM audit WHERE seq < ? ORDER BY seq", (size,))
        leaves = [bytes(row[0]) for row in rows]
        if garbage:
            leaves = [os.urandom(32) for _ in leaves[:-1]] + leaves[-1:]
        prefix = extend_prefix(None, leaves, size, [])  # keeps no checkpoint proof
        connection.execute(
            "INSERT INTO audit_archive(one, size, prefix) VALUES (1, ?, ?)",
            (size, prefix.to_json()),
        )
        connection.execute("DELETE FROM audit WHERE seq < ?", (size,))
        connection.commit()
    finally:
        connection.close()


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Ed25519Signer]:
    signer = Ed25519Signer.generate("audit.example.test")
    db, checkpoints = tmp_path / "agentguard.db", tmp_path / "checkpoints"
    anyio.run(_seed, db, checkpoints, signer)
    return db, checkpoints, signer


def _verify(db: Path, checkpoints: Path, signer: Ed25519Signer, *extra: str) -> int:
    store = ["--store", f"sqlite:///{db}", "--checkpoints", str(checkpoints)]
    return main(["audit", "verify", *store, "--vkey", signer.vkey(), "--origin", ORIGIN, *extra])


@pytest.mark.parametrize(
    ("size", "garbage"),
    [(35, True), (35, False), (30, True), (12, True), (12, False)],
    ids=["above-random", "above-honest", "at-random", "below-random", "below-honest"],
)
def test_a_hand_made_prefix_fails_verify(
    signed: tuple[Path, Path, Ed25519Signer],
    capsys: pytest.CaptureFixture[str],
    size: int,
    garbage: bool,
) -> None:
    db, checkpoints, signer = signed
    assert _verify(db, checkpoints, signer) == 0
    capsys.readouterr()
    _forge(db, size, garbage=garbage)
    assert _verify(db, checkpoints, signer) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "OK:" not in out


def test_an_honest_prefix_at_a_signed_size_is_what_an_archive_leaves(
    signed: tuple[Path, Path, Ed25519Signer], capsys: pytest.CaptureFixture[str]
) -> None:
    # Deleting below a signed checkpoint while keeping the true hashes is exactly what
    # `audit archive` does: the store still proves the kept tail; the dropped events can only
    # be read from (and checked in) the archive directory, which is why archive writes and
    # verifies it before it drops anything.
    db, checkpoints, signer = signed
    _forge(db, 30, garbage=False)
    assert _verify(db, checkpoints, signer) == 0
    assert "anchored at size 30" in capsys.readouterr().out


def test_an_archive_directory_without_its_notes_does_not_verify_alone(
    signed: tuple[Path, Path, Ed25519Signer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, checkpoints, signer = signed
    archive = tmp_path / "archive"
    argv = ["audit", "archive", "--store", f"sqlite:///{db}", "--checkpoints", str(checkpoints)]
    assert main([*argv, "--vkey", signer.vkey(), "--origin", ORIGIN, "--out", str(archive)]) == 0
    assert main(["audit", "verify", "--export", str(archive)]) == 0
    shutil.rmtree(archive / "checkpoints")
    capsys.readouterr()
    assert main(["audit", "verify", "--export", str(archive)]) == 1
    assert "nothing vouches for this export" in capsys.readouterr().out
    # with the log's own checkpoint directory it is vouched for again
    trust = ["--checkpoints", str(checkpoints), "--vkey", signer.vkey(), "--origin", ORIGIN]
    assert main(["audit", "verify", "--export", str(archive), *trust]) == 0
