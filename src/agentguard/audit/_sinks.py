"""Where signed checkpoints live: somewhere the log's own database cannot roll them back.

A :class:`CheckpointSink` keeps every note it was handed. Before signing, the
:class:`~agentguard.audit.Checkpointer` reads the newest note of its origin back
from the sink and refuses to sign a log that does not extend it; a sink that can answer that
question cheaply offers ``newest(origin)`` (both sinks here do), any other is read in full.

Notes are bytes-exact: a file is read as bytes and decoded, never with newline translation (a
note converted to CRLF is not the signed note, and must not read as one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio

_SIZE_DIGITS = 20  # a uint64 has at most 20 decimal digits

__all__ = ["CheckpointSink", "DirectoryCheckpointSink", "MemoryCheckpointSink", "note_size"]


@runtime_checkable
class CheckpointSink(Protocol):
    """Somewhere checkpoints outlive the database: a WORM directory, object storage, a witness.

    ``publish`` must be durable when it returns; ``notes`` returns every note, oldest first.
    A sink may also offer ``async newest(origin) -> list[str]``: the notes of ``origin`` at
    the greatest size it holds (plus any note whose origin it cannot read), so that the
    checkpointer need not read them all; and ``async recent(origin, limit) -> list[str]``:
    at most ``limit`` notes of ``origin``, from the greatest size down (the witness pool looks
    back past newer notes not cosigned yet).
    """

    async def publish(self, size: int, note: str) -> None: ...

    async def notes(self) -> list[str]: ...


def note_size(note: str) -> tuple[str, int] | None:
    """``(origin, size)`` from a note's first two lines, unverified; ``None`` if unreadable."""
    origin, _, rest = note.partition("\n")
    size_text = rest.partition("\n")[0]
    if (
        not origin
        or not 0 < len(size_text) <= _SIZE_DIGITS
        or not size_text.isascii()
        or not size_text.isdigit()
    ):
        return None
    return origin, int(size_text)


def _recent_of(notes: list[str], origin: str, limit: int) -> list[str]:
    """At most ``limit`` notes of ``origin``, greatest size first (stable among equals)."""
    mine = [(found[1], n) for n, note in enumerate(notes) if (found := note_size(note))]
    mine = [(size, n) for size, n in mine if note_size(notes[n]) == (origin, size)]
    mine.sort(key=lambda item: (-item[0], -item[1]))
    return [notes[n] for _, n in mine[:limit]]


def _newest_of(notes: list[str], origin: str) -> list[str]:
    """The notes of ``origin`` at its greatest size, and every note that cannot be read."""
    unreadable = [note for note in notes if note_size(note) is None]
    sizes = [found[1] for note in notes if (found := note_size(note)) and found[0] == origin]
    top = max(sizes, default=None)
    mine = [note for note in notes if note_size(note) == (origin, top)]
    return unreadable + mine


class MemoryCheckpointSink:
    """Keeps notes in a list: for tests."""

    def __init__(self) -> None:
        self._notes: list[str] = []

    async def publish(self, size: int, note: str) -> None:
        self._notes.append(note)

    async def notes(self) -> list[str]:
        return list(self._notes)

    async def newest(self, origin: str) -> list[str]:
        """The notes of ``origin`` at the greatest size, plus unreadable ones."""
        return _newest_of(self._notes, origin)

    async def recent(self, origin: str, limit: int) -> list[str]:
        """At most ``limit`` notes of ``origin``, greatest size first."""
        return _recent_of(self._notes, origin, limit)


class DirectoryCheckpointSink:
    """One file per checkpoint (``00000000000000001234.note``), created exclusively and fsynced.

    Point it at an append-only or WORM mount (or a directory synced elsewhere) so that whoever
    can rewrite the log's database cannot also rewrite the checkpoints.
    """

    SUFFIX = ".note"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _publish(self, size: int, note: str) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{size:020d}{self.SUFFIX}"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # published before, or by another process (serve --workers)
            if path.read_bytes() == note.encode("utf-8"):
                return
            path = self.directory / f"{size:020d}-{os.urandom(4).hex()}{self.SUFFIX}"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(note.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def publish(self, size: int, note: str) -> None:
        await anyio.to_thread.run_sync(self._publish, size, note)

    def _paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{self.SUFFIX}"))

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_bytes().decode("utf-8", errors="replace")  # no newline translation

    def _notes(self) -> list[str]:
        return [self._read(path) for path in self._paths()]

    async def notes(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._notes)

    def _newest(self, origin: str) -> list[str]:
        # Files are named by size, so the newest of ``origin`` is found reading from the top
        # down; notes of other origins (a shared directory) are skipped on the way.
        found: list[str] = []
        top: int | None = None
        for path in reversed(self._paths()):
            if top is not None and not path.name.startswith(f"{top:020d}"):
                break
            note = self._read(path)
            head = note_size(note)
            if head is None:
                found.append(note)
            elif head[0] == origin:
                top = head[1] if top is None else top
                if head[1] == top:
                    found.append(note)
        return found

    async def newest(self, origin: str) -> list[str]:
        """The notes of ``origin`` at the greatest size, plus unreadable ones."""
        return await anyio.to_thread.run_sync(self._newest, origin)

    def _recent(self, origin: str, limit: int) -> list[str]:
        found: list[str] = []
        for read, path in enumerate(reversed(self._paths())):  # named by size: greatest first
            if len(found) >= limit or read >= 4 * limit:  # bounded, even in a shared directory
                break
            note = self._read(path)
            head = note_size(note)
            if head is not None and head[0] == origin:
                found.append(note)
        return found

    async def recent(self, origin: str, limit: int) -> list[str]:
        """At most ``limit`` notes of ``origin``, greatest size first."""
        return await anyio.to_thread.run_sync(self._recent, origin, limit)

    def __repr__(self) -> str:
        return f"DirectoryCheckpointSink({str(self.directory)!r})"
