"""Archiving: the kept prefix hashes, archive refusals, and the contract on Memory and SQLite."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    AuditEntry,
    AuditEvent,
    Checkpointer,
    Ed25519Signer,
    MemoryCheckpointSink,
)
from agentguard.audit._archive import ArchiveRefused, ArchiveUnsupported, archive_to
from agentguard.audit._merkle import root
from agentguard.audit._prefix import ArchivedPrefix, check_prefix, extend_prefix
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import AuditArchiveContract
from agentguard.testing.conformance._audit import audit_event


class TestMemoryArchive(AuditArchiveContract):
    store_type = MemoryStore

    @pytest.fixture
    def store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock)


class TestSQLiteArchive(AuditArchiveContract):
    store_type = SQLiteStore

    @pytest.fixture
    async def store(self, clock: FakeClock, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(tmp_path / "agentguard.db", clock=clock) as store:
            yield store


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_kept_prefix_proves_every_checkpoint_it_was_given(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 600))
    leaves = _leaves(n)
    cuts = sorted(data.draw(st.sets(st.integers(1, n), min_size=1, max_size=3)))
    # An archive ends on a signed checkpoint: every cut is a signed size.
    sizes = sorted(set(data.draw(st.lists(st.integers(1, n), max_size=6))) | set(cuts))
    prefix: ArchivedPrefix | None = None
    for cut in cuts:
        start = 0 if prefix is None else prefix.size
        prefix = extend_prefix(prefix, leaves[start:cut], cut, sizes)
    assert prefix is not None
    prefix = ArchivedPrefix.from_json(prefix.to_json())
    assert prefix.compact().root() == root(leaves[: prefix.size])
    trusted = {m: root(leaves[:m]) for m in sizes if m <= prefix.size}
    found = check_prefix(prefix, trusted)
    assert found.failures == [] and found.warnings == []
    assert found.matched == max(trusted, default=0)
    forged = {m: hashlib.sha256(b"fork").digest() for m in trusted}
    assert len(check_prefix(prefix, forged).failures) == len(forged)
    # Without the checkpoint its last boundary was cut at, the prefix anchors nothing.
    unsigned = {m: r for m, r in trusted.items() if m != prefix.size}
    if unsigned:
        assert "no signed checkpoint" in check_prefix(prefix, unsigned).failures[-1]


def test_a_tampered_prefix_fails_its_own_check() -> None:
    leaves = _leaves(40)
    prefix = extend_prefix(extend_prefix(None, leaves[:16], 16, [5]), leaves[16:30], 30, [20])
    assert check_prefix(prefix, {}).failures == []
    wrong_last = ArchivedPrefix(prefix.boundaries, leaves[3], prefix.last_proof)
    assert "seq 29" in check_prefix(wrong_last, {}).failures[0]
    first, second = prefix.boundaries
    moved = type(first)(first.size, (leaves[0],), first.link, first.proofs)
    moved_prefix = ArchivedPrefix((moved, second), prefix.last_hash, prefix.last_proof)
    assert check_prefix(moved_prefix, {}).failures
    # A signed checkpoint inside the prefix that it kept no proof for fails closed (a forged
    # prefix would otherwise hide every deleted row behind a warning).
    unproven = check_prefix(prefix, {7: root(leaves[:7]), 30: root(leaves[:30])})
    assert unproven.warnings == [] and "no proof" in unproven.failures[0]
    assert len(unproven.failures) == 1


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"format": "x"}', '{"format": "agentguard-archived-prefix/v1", "boundaries": []}'],
)
def test_malformed_prefix_documents_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ArchivedPrefix.from_json(text)


class _AppendOnly:
    """An AuditStore from a third party: no archive support."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        return await self.inner.append(events)

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        return await self.inner.read(start, stop)

    async def head(self) -> AuditEntry | None:
        return await self.inner.head()


@pytest.mark.anyio
async def test_a_store_without_archive_support_is_refused_plainly(tmp_path: Path) -> None:
    with pytest.raises(ArchiveUnsupported, match="does not implement AuditArchiveStore"):
        await archive_to(_AppendOnly(), tmp_path / "a", notes=[], vkeys=["x"], origin="o")
    assert not (tmp_path / "a").exists()


@pytest.mark.anyio
async def test_a_tampered_log_is_not_archived(tmp_path: Path, clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    signer = Ed25519Signer.generate("o")
    sink = MemoryCheckpointSink()
    await store.append([audit_event(clock, n) for n in range(6)])
    await Checkpointer(store, signer, "o", sink).checkpoint()
    await store.append([audit_event(clock, n) for n in range(6, 9)])
    store._audit[2] = AuditEntry(
        2, store._audit[2].hash, store._audit[2].body.replace(b"/2", b"/X")
    )
    with pytest.raises(ArchiveRefused, match=r"does not verify.*MODIFIED"):
        await archive_to(
            store, tmp_path / "a", notes=await sink.notes(), vkeys=[signer.vkey()], origin="o"
        )
    assert len(await store.read()) == 9 and await store.archived_prefix() is None


@pytest.mark.anyio
async def test_archive_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "events.jsonl").write_text("old\n")
    with pytest.raises(ArchiveRefused, match="not empty"):
        await archive_to(MemoryStore(), tmp_path / "a", notes=[], vkeys=["x"], origin="o")
