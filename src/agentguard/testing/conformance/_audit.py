"""AuditStoreContract: linear, contiguous, hash-chained appends that checkpoints can vouch for.

The checkpoint half (:class:`AuditCheckpointContract`, part of :class:`AuditStoreContract`)
runs the real :class:`~agentguard.audit.Checkpointer` over the store and checks
the signed tree heads against the entries the store returns: size, RFC 6962 root, inclusion of
every entry and consistency between successive checkpoints. A store whose range reads skip,
repeat or reorder entries, or whose log changes under a checkpoint, fails here.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import anyio

from agentguard.audit._chain import verify_chain
from agentguard.audit._checkpointer import Checkpointer, MemoryCheckpointSink
from agentguard.audit._checkpoints import Checkpoint, Ed25519Signer, open_checkpoint
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.audit._merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    root,
    verify_consistency,
    verify_inclusion,
)
from agentguard.audit._rows import entry_from_row
from agentguard.audit._verify import verify_log
from agentguard.audit._verify_store import verify_store
from agentguard.storage._protocols import AuditRowStore, AuditStore
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import (
    ContractBase,
    assert_implements,
    assert_store_type,
)

__all__ = ["AuditCheckpointContract", "AuditStoreContract", "audit_event"]


def audit_event(clock: FakeClock, n: int) -> AuditEvent:
    return AuditEvent(
        action=Action.DECISION,
        ts=clock.now(),
        decision=Decision.ALLOW,
        method="GET",
        path=f"/crm/{n}",
        service="crm",
        user_id="u1",
    )


_ORIGIN = "conformance.example/audit"


class AuditCheckpointContract(ContractBase):
    """Subclass with a ``store`` fixture returning a fresh store with an empty log."""

    store_type: ClassVar[type[AuditStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``AuditStore``."""

    async def _signed(self, checkpointer: Checkpointer, signer: Ed25519Signer) -> Checkpoint:
        return open_checkpoint(await checkpointer.checkpoint(), [signer.vkey()])

    async def test_checkpoint_of_the_empty_log(self, store: AuditStore) -> None:
        signer = Ed25519Signer.generate(_ORIGIN)
        checkpointer = Checkpointer(store, signer, _ORIGIN, MemoryCheckpointSink())
        signed = await self._signed(checkpointer, signer)
        assert (signed.size, signed.root) == (0, EMPTY_ROOT)

    async def test_checkpoints_match_the_stored_entries(
        self, store: AuditStore, clock: FakeClock
    ) -> None:
        signer = Ed25519Signer.generate(_ORIGIN)
        sink = MemoryCheckpointSink()
        checkpointer = Checkpointer(store, signer, _ORIGIN, sink, batch=3)  # many range reads
        signed: list[Checkpoint] = []
        for batch in ([0], [1, 2, 3, 4], list(range(5, 13)), [13]):
            await store.append([audit_event(clock, n) for n in batch])
            signed.append(await self._signed(checkpointer, signer))
        leaves = [entry.hash for entry in await store.read()]
        assert [c.size for c in signed] == [1, 5, 13, 14] and len(leaves) == 14
        for checkpoint in signed:
            assert checkpoint.root == root(leaves[: checkpoint.size])
            for seq in range(checkpoint.size):
                proof = inclusion_proof(leaves, seq, checkpoint.size)
                assert verify_inclusion(leaves[seq], seq, checkpoint.size, proof, checkpoint.root)
        for old, new in itertools.pairwise(signed):
            proof = consistency_proof(leaves, old.size, new.size)
            assert verify_consistency(old.size, new.size, old.root, new.root, proof)

    async def test_a_restarted_checkpointer_accepts_the_log(
        self, store: AuditStore, clock: FakeClock
    ) -> None:
        """A new checkpointer rereads the log and proves it extends the sink's newest note."""
        signer = Ed25519Signer.generate(_ORIGIN)
        sink = MemoryCheckpointSink()
        await store.append([audit_event(clock, n) for n in range(7)])
        first = await self._signed(Checkpointer(store, signer, _ORIGIN, sink, batch=2), signer)
        await store.append([audit_event(clock, n) for n in range(7, 10)])
        restarted = Checkpointer(store, signer, _ORIGIN, sink, batch=4)
        second = await self._signed(restarted, signer)
        assert (first.size, second.size) == (7, 10)
        assert restarted.healthy
        leaves = [entry.hash for entry in await store.read()]
        assert second.root == root(leaves)


class AuditStoreContract(AuditCheckpointContract):
    """Subclass with a ``store`` fixture returning a fresh store with an empty log."""

    async def test_store_implements_audit_store(self, store: AuditStore) -> None:
        assert_store_type(self, store, AuditStore)

    async def test_empty_log(self, store: AuditStore) -> None:
        assert await store.head() is None
        assert await store.read() == []

    async def test_append_is_contiguous_and_chained(
        self, store: AuditStore, clock: FakeClock
    ) -> None:
        first = await store.append([audit_event(clock, 0)])
        batch = await store.append([audit_event(clock, n) for n in range(1, 5)])
        assert [e.seq for e in first + batch] == [0, 1, 2, 3, 4]
        entries = await store.read()
        assert entries == first + batch
        assert verify_chain(entries) is None
        assert await store.head() == batch[-1]

    async def test_range_reads(self, store: AuditStore, clock: FakeClock) -> None:
        await store.append([audit_event(clock, n) for n in range(10)])
        assert [e.seq for e in await store.read(3, 6)] == [3, 4, 5]
        assert [e.seq for e in await store.read(8)] == [8, 9]
        assert await store.read(10) == []
        assert await store.read(5, 5) == []
        assert await store.read(6, 2) == []

    async def test_read_rows_are_the_rows_read_converts(
        self, store: AuditStore, clock: FakeClock
    ) -> None:
        """``read_rows`` is optional (:class:`AuditRowStore`): a store offering it hands over
        exactly the rows whose conversion ``read`` returns, range by range. Either way the
        streaming verifier (which reads through ``read_rows`` where it can) reports on the
        store what the whole-log verifier reports on ``read()``."""
        await store.append([audit_event(clock, n) for n in range(10)])
        if isinstance(store, AuditRowStore):
            assert_implements(store, AuditRowStore)
            for start, stop in ((0, 10), (3, 6), (8, 100), (10, 20), (5, 5), (6, 2), (0, 1)):
                rows = await store.read_rows(start, stop)
                assert [entry_from_row(row) for row in rows] == await store.read(start, stop)
        streamed = await verify_store(store, page=4)
        assert streamed == verify_log(await store.read())
        assert streamed.size == 10

    async def test_concurrent_appends_form_one_chain(
        self, store: AuditStore, clock: FakeClock
    ) -> None:
        async def writer(n: int) -> None:
            for i in range(5):
                await store.append([audit_event(clock, n * 100 + i)])

        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(writer, n)
        entries = await store.read()
        assert [e.seq for e in entries] == list(range(50))
        assert verify_chain(entries) is None
        paths = sorted(str(e.event()["path"]) for e in entries)
        assert paths == sorted(f"/crm/{n * 100 + i}" for n in range(10) for i in range(5))
