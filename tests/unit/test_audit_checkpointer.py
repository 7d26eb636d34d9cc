"""Checkpointer, sinks, export, and the writer's opt-in buffer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    AuditWriter,
    Category,
    ChainBroken,
    Checkpointer,
    CheckpointRefused,
    DirectoryCheckpointSink,
    Ed25519Signer,
    MemoryCheckpointSink,
    export_log,
    open_checkpoint,
    prove_entry,
    read_export,
    verify_log,
    verify_proof,
)
from agentguard.errors import AuditUnavailable
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio
ORIGIN = "audit.example.test/agentguard/ci"


def events(clock: FakeClock, count: int) -> list[AuditEvent]:
    return [
        AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/e/{n}") for n in range(count)
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate("agentguard-ci")


async def test_checkpoints_grow_with_the_log(clock: FakeClock, signer: Ed25519Signer) -> None:
    store, sink = MemoryStore(clock=clock), MemoryCheckpointSink()
    checkpointer = Checkpointer(store, signer, ORIGIN, sink, batch=7)
    await store.append(events(clock, 20))
    first = await checkpointer.checkpoint()
    assert open_checkpoint(first, [signer.vkey()]).size == 20
    assert await checkpointer.checkpoint() == first  # nothing new: no duplicate note
    await store.append(events(clock, 5))
    second = await checkpointer.checkpoint()
    assert open_checkpoint(second, [signer.vkey()]).size == 25
    assert await sink.notes() == [first, second]
    report = verify_log(await store.read(), await sink.notes(), [signer.vkey()], origin=ORIGIN)
    assert report.ok and report.anchored


async def test_truncation_after_a_checkpoint_is_detected(
    clock: FakeClock, signer: Ed25519Signer
) -> None:
    store, sink = MemoryStore(clock=clock), MemoryCheckpointSink()
    await store.append(events(clock, 10))
    await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
    truncated = (await store.read())[:7]
    report = verify_log(truncated, await sink.notes(), [signer.vkey()])
    assert not report.ok
    assert report.first is not None and report.first.category is Category.TRUNCATED


async def test_checkpointer_refuses_to_sign_a_broken_chain(
    clock: FakeClock, signer: Ed25519Signer
) -> None:
    store = MemoryStore(clock=clock)
    await store.append(events(clock, 5))
    entries = store._audit  # the test plays a database administrator editing a row
    victim = entries[3]
    entries[3] = AuditEntry(seq=3, hash=victim.hash, body=victim.body.replace(b"/e/3", b"/e/X"))
    with pytest.raises(ChainBroken, match="seq 3"):
        await Checkpointer(store, signer, ORIGIN, MemoryCheckpointSink()).checkpoint()


async def test_directory_sink_is_exclusive_and_ordered(
    tmp_path: Path, signer: Ed25519Signer, clock: FakeClock
) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "cp")
    store = MemoryStore(clock=clock)
    checkpointer = Checkpointer(store, signer, ORIGIN, sink)
    for count in (3, 4, 5):
        await store.append(events(clock, count))
        await checkpointer.checkpoint()
    names = sorted(os.listdir(tmp_path / "cp"))
    assert names == [f"{size:020d}.note" for size in (3, 7, 12)]
    notes = await sink.notes()
    assert [open_checkpoint(n, [signer.vkey()]).size for n in notes] == [3, 7, 12]
    await sink.publish(12, notes[-1])  # idempotent for the same note
    assert len(await sink.notes()) == 3


async def test_two_processes_publishing_one_note_at_once_leave_one_file(
    tmp_path: Path, signer: Ed25519Signer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers of ``serve --workers`` sign the same size: whoever creates the file second
    (after both saw none) finds the same note and is done, instead of failing the round."""
    sink = DirectoryCheckpointSink(tmp_path / "cp")
    store = MemoryStore(clock=clock)
    await store.append(events(clock, 3))
    note = await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
    monkeypatch.setattr(Path, "exists", lambda self: False)  # both checked before either wrote
    await sink.publish(3, note)
    other = note.replace(note.splitlines()[-1], "\u2014 other AAAA")
    await sink.publish(3, other)  # a different note at that size is kept beside it
    monkeypatch.undo()
    assert sorted(await sink.notes()) == sorted([note, other])
    assert len(os.listdir(tmp_path / "cp")) == 2


async def test_export_verifies_from_files_alone(
    tmp_path: Path, signer: Ed25519Signer, clock: FakeClock
) -> None:
    store, sink = MemoryStore(clock=clock), MemoryCheckpointSink()
    await store.append(events(clock, 50))
    note = await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
    seen: list[int] = []
    count = await export_log(
        store,
        tmp_path / "export",
        notes=[note],
        vkeys=[signer.vkey()],
        origin=ORIGIN,
        batch=16,
        progress=seen.append,
    )
    assert count == 50 and seen == [16, 32, 48, 50]
    entries, notes, vkeys = read_export(tmp_path / "export")
    assert entries == await store.read()
    assert verify_log(entries, notes, vkeys).ok
    lines = (tmp_path / "export" / "events.jsonl").read_bytes().splitlines()
    lines[20] = lines[20].replace(b"/e/20", b"/e/99")
    (tmp_path / "export" / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    tampered, notes, vkeys = read_export(tmp_path / "export")
    report = verify_log(tampered, notes, vkeys)
    assert not report.ok and report.first is not None and report.first.seq == 20


async def test_offline_proof_from_a_checkpoint(signer: Ed25519Signer, clock: FakeClock) -> None:
    store, sink = MemoryStore(clock=clock), MemoryCheckpointSink()
    await store.append(events(clock, 33))
    note = await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
    document = prove_entry(await store.read(), 17, note)
    assert verify_proof(document, [signer.vkey()])
    assert not verify_proof(document, [Ed25519Signer.generate("other").vkey()])


class Flaky:
    """An audit store that fails while ``down`` is set."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.down = False

    async def append(self, batch: Sequence[AuditEvent]) -> Any:
        if self.down:
            raise ConnectionError("down")
        return await self.store.append(batch)


async def test_refuse_mode_keeps_nothing(clock: FakeClock) -> None:
    flaky = Flaky(MemoryStore(clock=clock))
    writer = AuditWriter(flaky)  # type: ignore[arg-type]
    flaky.down = True
    with pytest.raises(AuditUnavailable):
        await writer.record(events(clock, 1)[0])
    assert writer.pending == 0


async def test_buffer_mode_keeps_order_and_bounds(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    flaky = Flaky(store)
    writer = AuditWriter(flaky, on_failure="buffer", buffer_limit=3)  # type: ignore[arg-type]
    batch = events(clock, 6)
    flaky.down = True
    for event in batch[:3]:
        assert await writer.record(event) is None
    assert writer.pending == 3
    with pytest.raises(AuditUnavailable):
        await writer.record(batch[3])  # full: fail closed again
    assert writer.pending == 3
    flaky.down = False
    entry = await writer.record(batch[4])
    assert entry is not None and entry.seq == 3
    assert writer.pending == 0
    assert [e.event()["path"] for e in await store.read()] == ["/e/0", "/e/1", "/e/2", "/e/4"]
    flaky.down = True
    await writer.record(batch[5])
    flaky.down = False
    assert await writer.flush() == 1
    assert len(await store.read()) == 5


def test_writer_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError):
        AuditWriter(MemoryStore(), on_failure="ignore")  # type: ignore[arg-type]


async def test_directory_sink_newest_skips_other_origins(
    tmp_path: Path, signer: Ed25519Signer, clock: FakeClock
) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "cp")
    store, other = MemoryStore(clock=clock), MemoryStore(clock=clock)
    await store.append(events(clock, 4))
    await other.append(events(clock, 9))
    mine = await Checkpointer(store, signer, ORIGIN, sink).checkpoint()
    await Checkpointer(other, signer, "other.example/log", sink).checkpoint()  # a shared dir
    assert await sink.newest(ORIGIN) == [mine]
    assert await sink.newest("nobody.example/log") == []
    await sink.publish(4, mine)  # the same note again: no new file
    assert len(list((tmp_path / "cp").iterdir())) == 2


async def test_an_unreadable_note_in_the_sink_is_a_refusal(
    tmp_path: Path, signer: Ed25519Signer, clock: FakeClock
) -> None:
    sink = DirectoryCheckpointSink(tmp_path / "cp")
    store = MemoryStore(clock=clock)
    await store.append(events(clock, 3))
    checkpointer = Checkpointer(store, signer, ORIGIN, sink)
    await checkpointer.checkpoint()
    (tmp_path / "cp" / f"{99:020d}.note").write_text("")  # a torn write, or a planted file
    await store.append(events(clock, 1))
    with pytest.raises(CheckpointRefused, match="cannot be trusted"):
        await checkpointer.checkpoint()
    assert not checkpointer.healthy
    assert len(await sink.notes()) == 2
