"""AuditArchiveContract: a store drops a verified prefix and its tail still proves everything.

Runs the real :func:`~agentguard.audit._archive.archive_to` and
:class:`~agentguard.audit.Checkpointer` over the store: after an archive the store
reads from the archive point, appends continue the chain, the tail verifies against old and new
checkpoints with the kept prefix, checkpointers (running and restarted) keep signing, the
archive directory verifies offline, and a drop that does not match the log changes nothing.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import ClassVar

import pytest

from agentguard.audit._archive import archive_to
from agentguard.audit._checkpointer import Checkpointer, MemoryCheckpointSink
from agentguard.audit._checkpoints import Ed25519Signer, open_checkpoint
from agentguard.audit._export import check_manifest, read_export, read_prefix
from agentguard.audit._merkle import root
from agentguard.audit._prefix import ArchivedPrefix
from agentguard.audit._verify import verify_log
from agentguard.storage._protocols import AuditArchiveStore, AuditStore, IntegrityError
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._audit import audit_event
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["AuditArchiveContract"]

_ORIGIN = "conformance.example/archive"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class _Log:
    """A store with a checkpointer and its sink, as a gateway runs them."""

    def __init__(self, store: AuditStore, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock
        self.signer = Ed25519Signer.generate(_ORIGIN)
        self.sink = MemoryCheckpointSink()
        self.checkpointer = Checkpointer(store, self.signer, _ORIGIN, self.sink, batch=3)
        self.written = 0

    @property
    def vkeys(self) -> list[str]:
        return [self.signer.vkey()]

    async def add(self, count: int) -> None:
        await self.store.append([audit_event(self.clock, self.written + n) for n in range(count)])
        self.written += count

    async def checkpoint(self) -> int:
        return open_checkpoint(await self.checkpointer.checkpoint(), self.vkeys).size

    async def archive(self, directory: Path, size: int | None = None) -> int:
        result = await archive_to(
            self.store, directory, notes=await self.sink.notes(), vkeys=self.vkeys,
            origin=_ORIGIN, size=size,
        )  # fmt: skip
        return result.dropped

    async def verify(self, store: AuditStore | None = None) -> tuple[bool, int, int]:
        store = store or self.store
        assert isinstance(store, AuditArchiveStore)
        prefix = await store.archived_prefix()
        report = verify_log(
            await store.read(), await self.sink.notes(), self.vkeys, origin=_ORIGIN, prefix=prefix
        )
        return report.ok, report.size, report.anchored_size


class AuditArchiveContract(ContractBase):
    """Subclass with a ``store`` fixture returning a fresh store with an empty log."""

    store_type: ClassVar[type[AuditArchiveStore]]

    async def test_store_implements_audit_archive_store(self, store: AuditArchiveStore) -> None:
        assert_store_type(self, store, AuditArchiveStore)
        assert await store.archived_prefix() is None

    async def test_archive_drops_the_prefix_and_the_tail_still_verifies(
        self, store: AuditStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        log = _Log(store, clock)
        await log.add(4)
        assert await log.checkpoint() == 4
        await log.add(7)
        assert await log.checkpoint() == 11
        await log.add(3)
        leaves = [entry.hash for entry in await store.read()]
        assert await log.archive(tmp_path / "a1") == 11
        assert [e.seq for e in await store.read()] == [11, 12, 13]
        assert await store.read(0, 5) == []
        assert [e.seq for e in await store.read(9, 13)] == [11, 12]
        head = await store.head()
        assert head is not None and head.seq == 13
        (appended,) = await store.append([audit_event(clock, 99)])
        assert appended.seq == 14 and appended.event()["prev"] == _b64(head.hash)
        assert (await store.read(14))[0] == appended
        assert await log.verify() == (True, 15, 11)  # old checkpoints 4 and 11 both proven
        assert await log.checkpoint() == 15  # the running checkpointer goes on
        assert await log.verify() == (True, 15, 15)
        signed = open_checkpoint((await log.sink.notes())[-1], log.vkeys)
        full = [*leaves, *[e.hash for e in await store.read(14)]]
        assert signed.root == root(full)  # the same tree as if nothing had been dropped

    async def test_a_restarted_checkpointer_starts_from_the_prefix(
        self, store: AuditStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        log = _Log(store, clock)
        await log.add(9)
        await log.checkpoint()
        await log.add(2)
        await log.archive(tmp_path / "a1")
        await log.add(1)
        restarted = Checkpointer(store, log.signer, _ORIGIN, log.sink, batch=2)
        note = open_checkpoint(await restarted.checkpoint(), log.vkeys)
        assert note.size == 12 and restarted.healthy
        assert await log.verify() == (True, 12, 12)

    async def test_the_archive_directory_verifies_offline(
        self, store: AuditStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        log = _Log(store, clock)
        await log.add(5)
        await log.checkpoint()
        await log.add(6)
        await log.checkpoint()
        await log.add(1)
        await log.archive(tmp_path / "a1", size=5)
        await log.archive(tmp_path / "a2")  # a second segment, 5..10
        for directory, first, size in ((tmp_path / "a1", 0, 5), (tmp_path / "a2", 5, 11)):
            entries, notes, vkeys = read_export(directory)
            prefix = read_prefix(directory)
            assert (prefix.size if prefix else 0) == first
            assert check_manifest(directory, entries) == []
            report = verify_log(entries, notes, vkeys, origin=_ORIGIN, prefix=prefix)
            assert (report.ok, report.size, report.anchored_size) == (True, size, size)
        assert await log.verify() == (True, 12, 11)
        kept = await self._prefix(store)
        assert [b.size for b in kept.boundaries] == [5, 11]

    async def test_archive_refuses_without_a_checkpoint_below_the_head(
        self, store: AuditStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        log = _Log(store, clock)
        await log.add(3)
        await log.checkpoint()  # the checkpoint covers the head: archiving would drop it
        with pytest.raises(RuntimeError, match="no signed checkpoint"):
            await log.archive(tmp_path / "a1")
        assert [e.seq for e in await store.read()] == [0, 1, 2]
        assert isinstance(store, AuditArchiveStore) and await store.archived_prefix() is None

    async def test_a_drop_that_does_not_match_the_log_changes_nothing(
        self, store: AuditStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        log = _Log(store, clock)
        await log.add(4)
        await log.checkpoint()
        await log.add(2)
        await log.archive(tmp_path / "a1")
        kept = await self._prefix(store)
        assert isinstance(store, AuditArchiveStore)
        forged = ArchivedPrefix(
            boundaries=(*kept.boundaries[:-1], kept.boundaries[-1]),
            last_hash=bytes(32),
            last_proof=kept.last_proof,
        )
        with pytest.raises(IntegrityError):
            await store.drop_prefix(forged)  # same size: already archived
        before = await store.read()
        entries = await store.read()
        whole = ArchivedPrefix(kept.boundaries, entries[-1].hash, ())
        with pytest.raises(IntegrityError):
            await store.drop_prefix(whole)  # would drop the head (and does not extend kept)
        assert await store.read() == before
        assert await store.archived_prefix() == kept

    async def _prefix(self, store: AuditStore) -> ArchivedPrefix:
        assert isinstance(store, AuditArchiveStore)
        kept = await store.archived_prefix()
        assert kept is not None
        return kept
