"""Exporting a log so that it can be verified with nothing but the files.

Layout of an export directory::

    events.jsonl      one event per line: the exact canonical bytes, so that
                      sha256(b"\\x00" + line) is the leaf hash
    checkpoints/      the signed notes, one file each (as DirectoryCheckpointSink writes them)
    vkeys.txt         the verifier keys the exporter trusted, one per line (a hint: verifiers
                      should use keys they obtained out of band)
    manifest.json     origin, schema version, hash algorithm, first and last seq, the event
                      count and the hash of the last event (``head``)
    prefix.json       only in a segment that does not start at seq 0 (an archive after the
                      first): the :class:`~agentguard.audit._prefix.ArchivedPrefix` of the
                      events before it, whose peaks the segment's leaves extend

``agentguard audit verify --export`` compares the manifest with what ``events.jsonl`` holds
(:func:`check_manifest`), so a copy that lost its tail is a failure, not a shorter OK. The
manifest is not signed: it catches a truncated or partial copy, while truncation by someone who
also edits the manifest is caught only by a signed checkpoint covering the lost events.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio

from agentguard.audit._chain import AuditEntry, leaf_hash
from agentguard.audit._checkpointer import DirectoryCheckpointSink
from agentguard.audit._events import SCHEMA_VERSION
from agentguard.audit._prefix import ArchivedPrefix

if TYPE_CHECKING:
    from agentguard.storage._protocols import AuditStore

__all__ = [
    "ExportTally",
    "check_manifest",
    "export_log",
    "export_pages",
    "manifest_origin",
    "read_export",
    "read_export_notes",
    "read_note_files",
    "read_prefix",
]


async def export_log(
    store: AuditStore,
    directory: str | os.PathLike[str],
    *,
    notes: Sequence[str] = (),
    vkeys: Sequence[str] = (),
    origin: str | None = None,
    batch: int = 4096,
    progress: Callable[[int], None] | None = None,
    start: int = 0,
    stop: int | None = None,
    prefix: ArchivedPrefix | None = None,
) -> int:
    """Write the log, ``notes`` and ``vkeys`` to ``directory``; return the event count.

    ``start``/``stop`` export the segment ``start <= seq < stop`` only (``stop=None``: to the
    head); a segment starting after seq 0 needs the ``prefix`` it extends, written as
    ``prefix.json`` so the segment verifies offline. Entries must be contiguous from ``start``.
    A store that archived a prefix (an :class:`~agentguard.storage.AuditArchiveStore`)
    exports the events it still holds, from the prefix's end, with the prefix.
    """
    kept = getattr(store, "archived_prefix", None)
    if start == 0 and prefix is None and callable(kept):  # an archived store: its kept tail
        prefix = await kept()
        start = 0 if prefix is None else prefix.size
    if start and (prefix is None or prefix.size != start):
        raise ValueError("a segment after seq 0 needs the archived prefix that ends at its start")
    target = Path(directory)
    await anyio.to_thread.run_sync(lambda: target.mkdir(parents=True, exist_ok=True))
    count = 0
    head: bytes | None = None
    out = await anyio.to_thread.run_sync(_open_events, target)
    try:
        while stop is None or start + count < stop:
            upper = start + count + batch if stop is None else min(stop, start + count + batch)
            entries = await store.read(start + count, upper)
            if not entries:
                break
            if entries[0].seq != start + count:
                raise ValueError(f"the log has no entry at seq {start + count} to export")
            head = leaf_hash(entries[-1].body)
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
        "first_seq": start if count else None,
        "last_seq": start + count - 1 if count else None,
        "events": count,
        "head": None if head is None else base64.b64encode(head).decode("ascii"),
    }
    if start:
        text = prefix.to_json() if prefix is not None else ""
        await anyio.to_thread.run_sync((target / "prefix.json").write_text, text + "\n")
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
    """The entries, signed notes and vkeys of an export directory, all in memory.

    Entries get their position from their line number (after the manifest's ``first_seq`` in a
    segment with a ``prefix.json``; see :func:`read_prefix`) and their hash from their bytes,
    so a verifier checks the export itself, not a stored hash someone could have recomputed.
    :func:`export_pages` reads the same lines in constant memory.
    """
    source = Path(directory)
    prefix = read_prefix(source)
    tally = ExportTally(0 if prefix is None else prefix.size)
    entries = [
        AuditEntry(seq=seq, hash=leaf_hash(body), body=body)
        for seq, body in enumerate(itertools.chain.from_iterable(export_pages(source, tally)),
                                   start=tally.first_seq)
    ]  # fmt: skip
    notes, vkeys = read_export_notes(source)
    return entries, notes, vkeys


@dataclass(slots=True)
class ExportTally:
    """What :func:`export_pages` has read so far, for :func:`check_manifest`.

    Attributes:
        first_seq: the seq of the first line (the archived prefix's size, else 0).
        count: lines read.
        last: the last line's bytes (``None`` before the first).
    """

    first_seq: int
    count: int = 0
    last: bytes | None = None


def export_pages(
    directory: str | os.PathLike[str], tally: ExportTally, block: int = 1 << 22
) -> Iterator[list[bytes]]:
    """The lines of ``events.jsonl`` (without their newline) in pages, counted in ``tally``.

    Reads ``block`` bytes at a time, so memory stays bounded whatever the export's size. The
    lines are exactly those of iterating the file: split on ``\\n`` only, a final line without
    a newline included, an empty line kept as an empty event (which the verifier reports).
    """
    with (Path(directory) / "events.jsonl").open("rb") as handle:
        rest = b""
        while chunk := handle.read(block):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            if lines:
                tally.count += len(lines)
                tally.last = lines[-1]
                yield lines
        if rest:
            tally.count += 1
            tally.last = rest
            yield [rest]


def read_note_files(directory: str | os.PathLike[str]) -> list[str]:
    """The ``*.note`` files of a checkpoint directory, in name order, as their exact text.

    The bytes are decoded as UTF-8 with no newline translation: a note whose line ends were
    rewritten (CRLF) is not the text that was signed, and must fail to verify as it does with
    any other C2SP verifier. Undecodable bytes become U+FFFD, which no signature covers. A
    directory that does not exist holds no notes.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return [
        path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(folder.glob(f"*{DirectoryCheckpointSink.SUFFIX}"))
    ]


def read_export_notes(directory: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The signed notes (``checkpoints/``, exact bytes: :func:`read_note_files`) and the vkeys
    (``vkeys.txt``) of an export. The vkeys are the exporter's: they prove the export consistent
    with itself, not that the operator's key signed it; verify with keys obtained out of band."""
    source = Path(directory)
    notes = read_note_files(source / "checkpoints")
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
    return notes, vkeys


def read_prefix(directory: str | os.PathLike[str]) -> ArchivedPrefix | None:
    """The archived prefix a segment extends (its ``prefix.json``), ``None`` for a whole log.

    Raises ``ValueError`` if the file is there but is not an archived prefix.
    """
    path = Path(directory) / "prefix.json"
    if not path.exists():
        return None
    return ArchivedPrefix.from_json(path.read_text(encoding="utf-8"))


def _manifest(source: Path) -> dict[str, object] | str:
    """The manifest as a JSON object, or why it cannot be read."""
    try:
        loaded: object = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{source} has no manifest.json: it is not a complete export"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{source}/manifest.json cannot be read: {type(exc).__name__}"
    if not isinstance(loaded, dict):
        return f"{source}/manifest.json is not a JSON object"
    return loaded


def manifest_origin(directory: str | os.PathLike[str]) -> str | None:
    """The origin the exporter named in ``manifest.json``, if any."""
    manifest = _manifest(Path(directory))
    origin = manifest.get("origin") if isinstance(manifest, dict) else None
    return origin if isinstance(origin, str) and origin else None


def check_manifest(
    directory: str | os.PathLike[str], entries: Sequence[AuditEntry] | ExportTally
) -> list[str]:
    """Where ``manifest.json`` disagrees with what was read from the export (none: ``[]``).

    ``entries`` are the entries :func:`read_export` gave, or the :class:`ExportTally` of a
    streamed read. The event count and last seq must match, and so must ``head`` (the hash of
    the last event) when the manifest has one (exports before it was added do not).
    """
    source = Path(directory)
    manifest = _manifest(source)
    if isinstance(manifest, str):
        return [manifest]
    if isinstance(entries, ExportTally):
        count, first = entries.count, entries.first_seq if entries.count else 0
        last = None if entries.last is None else leaf_hash(entries.last)
    else:
        count, first = len(entries), entries[0].seq if entries else 0
        last = entries[-1].hash if entries else None
    problems: list[str] = []
    events = manifest.get("events")
    if type(events) is not int or events != count:
        problems.append(
            f"the manifest says {events!r} events but events.jsonl holds {count}: "
            "the export is truncated or was added to"
        )
    if count and manifest.get("first_seq", 0) != first:
        problems.append(f"the manifest's first_seq is not {first}, where the events start")
    last_seq, expected = manifest.get("last_seq"), (first + count - 1 if count else None)
    if type(last_seq) is not type(expected) or last_seq != expected:
        problems.append(f"the manifest's last_seq {last_seq!r} is not the last line read")
    if "head" in manifest:
        head = base64.b64encode(last).decode("ascii") if count and last is not None else None
        if manifest["head"] != head:
            problems.append("the manifest's head is not the hash of the last event read")
    return problems
