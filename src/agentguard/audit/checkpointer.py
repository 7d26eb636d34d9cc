"""Signed checkpoints, published where the log's own database cannot roll them back.

A hash chain shows edits in the middle of a log, not the loss of its tail: every prefix of a
valid chain is valid. A signed checkpoint (origin, size, Merkle root) that someone outside the
database keeps turns truncation and rollback into findings. The :class:`Checkpointer` extends an
RFC 6962 compact range with the entries appended since its last run, re-checks their chain
links, signs a C2SP tlog-checkpoint note and hands it to a :class:`CheckpointSink`.

Only the checkpointer needs the signing key; the request path never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio

from agentguard.audit.chain import GENESIS_PREV, verify_chain
from agentguard.audit.checkpoints import Checkpoint, Signer, sign_checkpoint
from agentguard.audit.merkle import CompactRange

if TYPE_CHECKING:
    from agentguard.storage.protocols import AuditStore

__all__ = [
    "ChainBroken",
    "CheckpointSink",
    "Checkpointer",
    "DirectoryCheckpointSink",
    "MemoryCheckpointSink",
]


class ChainBroken(RuntimeError):
    """The log the checkpointer was about to sign does not chain; nothing was signed."""


@runtime_checkable
class CheckpointSink(Protocol):
    """Somewhere checkpoints outlive the database: a WORM directory, object storage, a witness.

    ``publish`` must be durable when it returns; ``notes`` returns every note, oldest first.
    """

    async def publish(self, size: int, note: str) -> None: ...

    async def notes(self) -> list[str]: ...


class MemoryCheckpointSink:
    """Keeps notes in a list: for tests."""

    def __init__(self) -> None:
        self._notes: list[str] = []

    async def publish(self, size: int, note: str) -> None:
        self._notes.append(note)

    async def notes(self) -> list[str]:
        return list(self._notes)


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
        if path.exists():
            if path.read_text(encoding="utf-8") == note:
                return
            path = self.directory / f"{size:020d}-{os.urandom(4).hex()}{self.SUFFIX}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def publish(self, size: int, note: str) -> None:
        await anyio.to_thread.run_sync(self._publish, size, note)

    def _notes(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        paths = sorted(self.directory.glob(f"*{self.SUFFIX}"))
        return [path.read_text(encoding="utf-8") for path in paths]

    async def notes(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._notes)

    def __repr__(self) -> str:
        return f"DirectoryCheckpointSink({str(self.directory)!r})"


class Checkpointer:
    """Signs checkpoints of an :class:`AuditStore` and publishes them.

    Args:
        store: the log.
        signer: the checkpoint key (``Ed25519Signer``, or a KMS-backed :class:`Signer`).
        origin: the log's name in every note, e.g. ``"audit.example.com/agentguard/prod"``.
        sink: where notes go.
        batch: how many entries to read per round trip while catching up.
    """

    def __init__(
        self,
        store: AuditStore,
        signer: Signer,
        origin: str,
        sink: CheckpointSink,
        *,
        batch: int = 4096,
    ) -> None:
        self.store = store
        self.signer = signer
        self.origin = origin
        self.sink = sink
        self.batch = batch
        self._range = CompactRange()
        self._last_hash = GENESIS_PREV
        self._last_note: str | None = None

    async def _catch_up(self) -> None:
        while True:
            entries = await self.store.read(self._range.size, self._range.size + self.batch)
            if not entries:
                return
            broken = verify_chain(entries, prev=self._last_hash)
            if broken is not None or entries[0].seq != self._range.size:
                seq = broken.seq if broken is not None else self._range.size
                problem = broken.problem if broken is not None else "unexpected first seq"
                raise ChainBroken(f"refusing to sign: seq {seq}: {problem}")
            self._range.extend([entry.hash for entry in entries])
            self._last_hash = entries[-1].hash

    async def checkpoint(self) -> str:
        """Sign and publish a checkpoint of the log as it is now; return the note.

        If nothing was appended since the last checkpoint, the last note is returned again
        without publishing a duplicate. Raises :class:`ChainBroken` rather than sign a log
        whose new entries do not chain.
        """
        before = self._range.size
        await self._catch_up()
        if self._last_note is not None and self._range.size == before:
            return self._last_note
        note = sign_checkpoint(
            Checkpoint(origin=self.origin, size=self._range.size, root=self._range.root()),
            [self.signer],
        )
        await self.sink.publish(self._range.size, note)
        self._last_note = note
        return note

    async def run(self, every: float = 1.0) -> None:
        """Checkpoint every ``every`` seconds until cancelled."""
        while True:
            await self.checkpoint()
            await anyio.sleep(every)

    def __repr__(self) -> str:
        return f"Checkpointer(origin={self.origin!r}, size={self._range.size})"
