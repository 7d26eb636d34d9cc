"""Archive a verified, checkpoint-anchored prefix of the log to a directory, then drop it.

:func:`archive_to` is what ``agentguard audit archive`` runs:

1. verify the whole log the store holds (from its archived prefix, if any) against the signed
   checkpoints; any failure refuses;
2. pick the segment's end ``n``: the newest signed checkpoint (or ``size``, which must be one)
   below the log's size, so the segment is anchored and the head stays in the store;
3. export the segment ``[start, n)`` in the export format (``events.jsonl``, the notes up to
   ``n``, ``vkeys.txt``, ``manifest.json``, and ``prefix.json`` when ``start > 0``), fsync it,
   read it back and verify it offline, anchored at ``n``;
4. only then ask the store to drop ``[start, n)``, keeping the
   :class:`~agentguard.audit._prefix.ArchivedPrefix` (compact range at ``n``, the hash of event
   ``n - 1`` with its inclusion proof, consistency proofs from every older signed checkpoint),
   so the store's tail still verifies against every checkpoint, old and new.

The archive directory is the only copy of the dropped events: put it on storage as durable as
the checkpoint directory (WORM, or object lock) before running this again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from agentguard.audit._checkpoints import CheckpointError, NoteVerifier, open_checkpoint
from agentguard.audit._export import check_manifest, export_log, read_export, read_prefix
from agentguard.audit._prefix import ArchivedPrefix, extend_prefix
from agentguard.audit._sinks import note_size
from agentguard.audit._verify import verify_log
from agentguard.errors import AgentGuardError
from agentguard.storage._protocols import AuditArchiveStore, AuditStore

__all__ = ["ArchiveRefused", "ArchiveResult", "ArchiveUnsupported", "archive_to"]


class ArchiveRefused(AgentGuardError, RuntimeError):
    """Nothing was dropped: the log, the checkpoints or the written archive did not verify."""


class ArchiveUnsupported(ArchiveRefused):
    """The store cannot drop events (it does not implement ``AuditArchiveStore``)."""


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What :func:`archive_to` did: events ``[first_seq, size)`` went to ``directory``."""

    directory: Path
    first_seq: int
    size: int
    dropped: int


def _trusted(notes: Sequence[str], vkeys: Sequence[str], origin: str) -> dict[int, bytes]:
    verifiers = [NoteVerifier.from_vkey(v) for v in vkeys]
    trusted: dict[int, bytes] = {}
    for note in notes:
        try:
            checkpoint = open_checkpoint(note, verifiers)
        except CheckpointError:
            continue  # verify_log reports it; it anchors nothing here
        if checkpoint.origin == origin:
            trusted.setdefault(checkpoint.size, checkpoint.root)
    return trusted


def _empty(directory: Path) -> bool:
    return not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))


async def archive_to(
    store: AuditStore,
    directory: str | os.PathLike[str],
    *,
    notes: Sequence[str],
    vkeys: Sequence[str],
    origin: str,
    size: int | None = None,
) -> ArchiveResult:
    """Archive the oldest events up to a signed checkpoint into ``directory``, then drop them.

    Args:
        store: the log; it must implement ``AuditArchiveStore``.
        directory: a new (or empty) directory for the segment.
        notes: signed checkpoint notes (the checkpoint directory's).
        vkeys: trusted verifier keys for them.
        origin: the log's origin; only its notes count.
        size: archive up to this checkpoint size (default: the newest one below the head).

    Raises :class:`ArchiveUnsupported` for a store that cannot drop events and
    :class:`ArchiveRefused` when anything does not verify; nothing is dropped then.
    """
    if not isinstance(store, AuditArchiveStore):
        raise ArchiveUnsupported(
            f"{type(store).__name__} cannot drop archived events (it does not implement "
            "AuditArchiveStore); use `agentguard audit export` to copy the log instead"
        )
    if not vkeys:
        raise ArchiveRefused("archiving needs trusted verifier keys (--vkey or --vkeys-file)")
    target = Path(directory)
    if not await anyio.to_thread.run_sync(_empty, target):
        raise ArchiveRefused(f"{target} exists and is not empty; archive into a new directory")
    kept = await store.archived_prefix()
    start = 0 if kept is None else kept.size
    entries = await store.read(start)
    report = verify_log(entries, notes, vkeys, origin=origin, prefix=kept)
    if not report.ok:
        first = report.first.line() if report.first is not None else "the log does not verify"
        raise ArchiveRefused(f"the log does not verify; nothing archived: {first}")
    trusted = _trusted(notes, vkeys, origin)
    candidates = [s for s in trusted if start < s < report.size and s <= report.anchored_size]
    if size is None:
        if not candidates:
            raise ArchiveRefused(
                f"no signed checkpoint of {origin} lies between seq {start} and the head "
                f"({report.size} events): sign one (agentguard audit checkpoint) and archive once "
                "newer events follow it"
            )
        size = max(candidates)
    elif size not in candidates:
        raise ArchiveRefused(
            f"--size {size} is not the size of a verified signed checkpoint between seq {start} "
            f"and the head ({report.size} events)"
        )
    segment = [
        note for note in notes if (found := note_size(note)) and found == (origin, found[1])
        and found[1] <= size
    ]  # fmt: skip
    await export_log(
        store, target, notes=segment, vkeys=vkeys, origin=origin, start=start, stop=size,
        prefix=kept,
    )  # fmt: skip
    prefix = await anyio.to_thread.run_sync(_check_written, target, vkeys, origin, size, trusted)
    dropped = await store.drop_prefix(prefix)
    return ArchiveResult(directory=target, first_seq=start, size=size, dropped=dropped)


def _check_written(
    target: Path, vkeys: Sequence[str], origin: str, size: int, trusted: dict[int, bytes]
) -> ArchivedPrefix:
    """Read the written segment back, verify it offline, and build the prefix to keep."""
    kept = read_prefix(target)
    entries, notes, _ = read_export(target)
    problems = check_manifest(target, entries)
    report = verify_log(entries, notes, vkeys, origin=origin, prefix=kept)
    if problems or not report.ok or report.size != size or report.anchored_size != size:
        detail = problems[0] if problems else (report.first.line() if report.first else "")
        raise ArchiveRefused(
            f"the archive written to {target} does not verify offline, anchored at {size}; "
            f"nothing was dropped: {detail or 'not anchored at its end'}"
        )
    leaves = [entry.hash for entry in entries]  # recomputed from the written bytes
    prefix = extend_prefix(kept, leaves, size, sorted(trusted))
    if prefix.compact().root() != trusted[size]:  # pragma: no cover - verify_log checked it
        raise ArchiveRefused("the archived prefix does not have the signed root")
    return prefix
