"""``agentguard audit archive`` on a SQLite store: archives, refuses plainly, never creates."""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
import pytest

from agentguard.audit import Checkpointer, DirectoryCheckpointSink, Ed25519Signer, verify_log
from agentguard.audit._export import check_manifest, read_export
from agentguard.cli import _audit_archive as audit_archive
from agentguard.cli._common_args import target_options
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance._audit import audit_event

ORIGIN = "audit.example.test/agentguard"


def parse(argv: list[str]) -> argparse.Namespace:
    """The parser lines the ``audit archive`` subcommand registers (see the report)."""
    parser = argparse.ArgumentParser()
    target_options(parser)
    parser.add_argument("--checkpoints", type=Path)
    parser.add_argument("--vkey", action="append", default=[])
    parser.add_argument("--vkeys-file", type=Path)
    parser.add_argument("--origin")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int)
    return parser.parse_args(argv)


async def _seed(db: Path, checkpoints: Path, signer: Ed25519Signer) -> None:
    clock = FakeClock()
    async with SQLiteStore(db, clock=clock) as store:
        sink = DirectoryCheckpointSink(checkpoints)
        await store.append([audit_event(clock, n) for n in range(20)])
        await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
        await store.append([audit_event(clock, n) for n in range(20, 25)])


def test_archive_command_moves_the_anchored_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = Ed25519Signer.generate("audit.example.test")
    db, checkpoints = tmp_path / "agentguard.db", tmp_path / "checkpoints"
    anyio.run(_seed, db, checkpoints, signer)
    argv = ["--store", f"sqlite:///{db}", "--checkpoints", str(checkpoints)]
    argv += ["--vkey", signer.vkey(), "--origin", ORIGIN, "--out", str(tmp_path / "archive")]
    assert audit_archive.run(parse(argv)) == 0
    assert "archived seq 0..19" in capsys.readouterr().out
    entries, notes, vkeys = read_export(tmp_path / "archive")
    assert check_manifest(tmp_path / "archive", entries) == []
    report = verify_log(entries, notes, vkeys, origin=ORIGIN)
    assert (report.ok, report.size, report.anchored) == (True, 20, True)

    async def kept() -> list[int]:
        async with SQLiteStore(db) as store:
            return [entry.seq for entry in await store.read()]

    assert anyio.run(kept) == list(range(20, 25))
    again = [*argv[:-1], str(tmp_path / "again")]
    assert audit_archive.run(parse(again)) == 1  # no checkpoint between 20 and the head
    assert "no signed checkpoint" in capsys.readouterr().err


def test_archive_command_never_creates_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "checkpoints").mkdir()
    argv = ["--store", f"sqlite:///{tmp_path / 'missing.db'}", "--vkey", "k", "--origin", ORIGIN]
    argv += ["--checkpoints", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "a")]
    assert audit_archive.run(parse(argv)) == 2
    assert "never creates a store" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_archive_command_needs_an_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store", "sqlite:///x.db", "--out", str(tmp_path / "a")]
    args = parse(argv)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AGENTGUARD_AUDIT_ORIGIN", raising=False)
        assert audit_archive.run(args) == 2
    assert "needs the log's origin" in capsys.readouterr().err
