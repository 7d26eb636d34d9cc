"""Exporting a log so that it can be verified with nothing but the files.

Layout of an export directory::

    events.jsonl      one event per line: the exact canonical bytes, so that
                      sha256(b"\\x00" + line) is the leaf hash
    checkpoints/      the signed notes, one file each (as DirectoryCheckpointSink writes them)
    vkeys.txt         the verifier keys the exporter trusted, one per line (a hint: verifiers
                      should use keys they obtained out of band)
    manifest.json     origin, schema version, hash algorithm, first and last seq
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio

from agentguard.audit.chain import AuditEntry, leaf_hash
from agentguard.audit.checkpointer import DirectoryCheckpointSink
from agentguard.audit.events import SCHEMA_VERSION

if TYPE_CHECKING:
    from agentguard.storage.protocols import AuditStore

__all__ = ["export_log", "read_export"]


async def export_log(
    store: AuditStore,
    directory: str | os.PathLike[str],
    *,
    notes: Sequence[str] = (),
    vkeys: Sequence[str] = (),
    origin: str | None = None,
    batch: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the whole log, ``notes`` and ``vkeys`` to ``directory``; return the event count."""
    target = Path(directory)
    await anyio.to_thread.run_sync(lambda: target.mkdir(parents=True, exist_ok=True))
    count = 0
    out = await anyio.to_thread.run_sync(_open_events, target)
    try:
        while True:
            entries = await store.read(count, count + batch)
            if not entries:
                break
            chunk = b"".join(entry.body + b"\n" for entry in entries)
            await anyio.to_thread.run_sync(out.write, chunk)
            count += len(entries)
            if progress is not None:
                progress(count)
        await anyio.to_thread.run_sync(_sync, out)
    finally:
        out.close()
    sink = DirectoryCheckpointSink(target / "checkpoints")
    for note in notes:
        size_line = note.split("\n", 2)[1] if note.count("\n") >= 2 else "0"
        await sink.publish(int(size_line) if size_line.isdigit() else 0, note)
    manifest: dict[str, object] = {
        "origin": origin,
        "schema": SCHEMA_VERSION,
        "hash": "sha256, RFC 6962 leaf hash of each line",
        "first_seq": 0 if count else None,
        "last_seq": count - 1 if count else None,
        "events": count,
    }
    await anyio.to_thread.run_sync(_finish, target, list(vkeys), manifest)
    return count


def _open_events(target: Path) -> BinaryIO:
    return (target / "events.jsonl").open("wb")


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _finish(target: Path, vkeys: list[str], manifest: dict[str, object]) -> None:
    (target / "vkeys.txt").write_text("".join(f"{v}\n" for v in vkeys), encoding="utf-8")
    text = json.dumps(manifest, indent=2) + "\n"
    (target / "manifest.json").write_text(text, encoding="utf-8")


def read_export(
    directory: str | os.PathLike[str],
) -> tuple[list[AuditEntry], list[str], list[str]]:
    """The entries, signed notes and vkeys of an export directory.

    Entries get their position from their line number and their hash from their bytes, so a
    verifier checks the export itself, not a stored hash someone could have recomputed.
    """
    source = Path(directory)
    entries: list[AuditEntry] = []
    with (source / "events.jsonl").open("rb") as handle:
        for seq, line in enumerate(handle):
            body = line[:-1] if line.endswith(b"\n") else line
            entries.append(AuditEntry(seq=seq, hash=leaf_hash(body), body=body))
    notes = DirectoryCheckpointSink(source / "checkpoints")._notes()
    vkeys_file = source / "vkeys.txt"
    vkeys = (
        [
            line.strip()
            for line in vkeys_file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if vkeys_file.exists()
        else []
    )
    return entries, notes, vkeys
