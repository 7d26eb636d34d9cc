"""A restored old snapshot (a rollback, a fork) is caught before anything more is signed.

The checkpointer reads the newest checkpoint of its origin back from the sink and signs only a
log whose first ``m`` entries have that checkpoint's root. Here a SQLite file is copied, the log
grows and is anchored, the copy is put back, and the checkpointer must refuse: nothing new in
the sink, a CRITICAL alert, ``healthy`` false and ``/readyz`` 503. A hypothesis property
generates histories and checks the checkpointer against ``verify_log`` (the differential
oracle): it signs exactly when the log extends the sink's newest checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Action,
    AuditEvent,
    Category,
    Checkpointer,
    CheckpointRefused,
    DirectoryCheckpointSink,
    Ed25519Signer,
    LogForked,
    MemoryCheckpointSink,
    open_checkpoint,
    verify_log,
)
from agentguard.config import load_settings
from agentguard.gateway import build_gateway
from agentguard.gateway.app import Gateway
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.testing import FakeClock
from tests.product.conftest import new_kek
from tests.support.servers import LoopbackServer

ORIGIN = "audit.example.test/agentguard/fork"
SIGNER = Ed25519Signer.generate("audit.example.test")
ENV = {
    "AGENTGUARD_STORE": "memory://",
    "AGENTGUARD_PUBLIC_ORIGIN": "http://gw.test",
    "AGENTGUARD_KEK": new_kek(),
}


def events(count: int, tag: str) -> list[AuditEvent]:
    clock = FakeClock()
    return [
        AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/{tag}/{n}") for n in range(count)
    ]


async def fill(path: Path, count: int, tag: str) -> None:
    async with SQLiteStore(path) as store:
        for event in events(count, tag):
            await store.append([event])


async def sign(path: Path, sink: DirectoryCheckpointSink) -> str:
    async with SQLiteStore(path) as store:
        return await Checkpointer(store, SIGNER, ORIGIN, sink).checkpoint()


def restore(snapshot: Path, path: Path) -> None:
    """Put an old copy of the database file back, as a restore from backup does."""
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        side.unlink(missing_ok=True)
    shutil.copyfile(snapshot, path)


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.CRITICAL and "AUDIT ALERT" in r.msg]


@pytest.fixture
def restored(tmp_path: Path) -> tuple[Path, DirectoryCheckpointSink]:
    """A SQLite log of 8 events restored after checkpoints at 8 and 12 were signed."""
    path, snapshot = tmp_path / "audit.db", tmp_path / "snapshot.db"
    sink = DirectoryCheckpointSink(tmp_path / "checkpoints")
    anyio.run(fill, path, 8, "before")
    anyio.run(sign, path, sink)
    shutil.copyfile(path, snapshot)  # the store is closed: the file holds everything
    anyio.run(fill, path, 4, "lost")
    anyio.run(sign, path, sink)
    restore(snapshot, path)
    return path, sink


@pytest.mark.parametrize("regrow", [0, 3, 4, 9], ids=lambda n: f"regrow{n}")
def test_restored_sqlite_snapshot_is_refused(
    restored: tuple[Path, DirectoryCheckpointSink],
    regrow: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shorter than the newest checkpoint (0, 3), as long (4) or longer (9) with other events."""
    path, sink = restored
    anyio.run(fill, path, regrow, "forked")
    before = sorted(p.name for p in sink.directory.iterdir())

    async def attempt() -> Checkpointer:
        async with SQLiteStore(path) as store:
            checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink)
            with pytest.raises(LogForked) as refused:
                await checkpointer.checkpoint()
            assert "12" in str(refused.value)
            assert not checkpointer.healthy and checkpointer.problem
            with pytest.raises(LogForked):
                await checkpointer.check()
            with pytest.raises(LogForked):  # sticky: it refuses again without rereading
                await checkpointer.checkpoint()
            return checkpointer

    with caplog.at_level(logging.CRITICAL, logger="agentguard.audit"):
        anyio.run(attempt)
    assert sorted(p.name for p in sink.directory.iterdir()) == before  # nothing signed
    alerts = refusals(caplog)
    assert len(alerts) == 1 and ORIGIN in alerts[0].getMessage()
    assert "PRIVATE" not in caplog.text


def test_a_log_that_extends_its_checkpoints_is_signed_after_a_restart(tmp_path: Path) -> None:
    """The control case: a fresh checkpointer on the same, grown log signs without alarm."""
    path, sink = tmp_path / "audit.db", DirectoryCheckpointSink(tmp_path / "checkpoints")
    anyio.run(fill, path, 5, "a")
    anyio.run(sign, path, sink)
    anyio.run(fill, path, 3, "b")
    note = anyio.run(sign, path, sink)
    assert open_checkpoint(note, [SIGNER.vkey()]).size == 8
    assert anyio.run(sign, path, sink) == note  # unchanged log: no refusal, the same size


@pytest.mark.anyio
async def test_in_process_rollback_and_fork_are_refused() -> None:
    """The same checkpointer, its log swapped under it: shorter, then same length but other."""
    store, sink = MemoryStore(), MemoryCheckpointSink()
    checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink)
    await store.append(events(6, "a"))
    await checkpointer.checkpoint()
    store._audit[:] = store._audit[:4]  # the test plays a restore
    with pytest.raises(LogForked, match="shrank"):
        await checkpointer.checkpoint()

    other, sink2 = MemoryStore(), MemoryCheckpointSink()
    second = Checkpointer(other, SIGNER, ORIGIN, sink2)
    await other.append(events(6, "a"))
    await second.checkpoint()
    other._audit[:] = other._audit[:3]
    await other.append(events(3, "z"))
    with pytest.raises(LogForked):
        await second.checkpoint()
    assert len(await sink2.notes()) == 1


@pytest.mark.anyio
async def test_notes_of_the_origin_by_an_unknown_key_are_refused_others_ignored() -> None:
    store = MemoryStore()
    await store.append(events(3, "a"))
    stranger = Ed25519Signer.generate("audit.example.test")
    elsewhere = MemoryCheckpointSink()
    await Checkpointer(store, stranger, "other.example/log", elsewhere).checkpoint()
    checkpointer = Checkpointer(store, SIGNER, ORIGIN, elsewhere)
    await checkpointer.checkpoint()  # another origin's notes do not count
    planted = MemoryCheckpointSink()
    await Checkpointer(store, stranger, ORIGIN, planted).checkpoint()
    with pytest.raises(CheckpointRefused, match="cannot be trusted"):
        await Checkpointer(store, SIGNER, ORIGIN, planted).checkpoint()
    rotated = Checkpointer(store, SIGNER, ORIGIN, planted, vkeys=[stranger.vkey()])
    await rotated.checkpoint()  # the previous key, named during a rotation, is trusted


@pytest.mark.anyio
async def test_two_checkpointers_on_one_log_and_sink_never_refuse_each_other() -> None:
    store, sink = MemoryStore(), MemoryCheckpointSink()
    first = Checkpointer(store, SIGNER, ORIGIN, sink, batch=3)
    second = Checkpointer(store, SIGNER, ORIGIN, sink, batch=5)
    for step in range(6):
        await store.append(events(step + 1, f"s{step}"))
        await (first if step % 2 else second).checkpoint()
    await store.append(events(2, "end"))
    await first.checkpoint()
    await second.checkpoint()
    assert first.healthy and second.healthy
    report = verify_log(await store.read(), await sink.notes(), [SIGNER.vkey()], origin=ORIGIN)
    assert report.ok and report.anchored


histories = st.tuples(
    st.integers(min_value=1, max_value=40),  # events before the checkpoint
    st.integers(min_value=0, max_value=20),  # events after it, later lost or kept
    st.integers(min_value=0, max_value=60),  # where the restored snapshot ends
    st.integers(min_value=0, max_value=30),  # events written after the restore
    st.booleans(),  # restore (True) or keep the log (False)
    st.booleans(),  # a fresh checkpointer (a restarted process) or the same one
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_checkpointer_signs_exactly_when_verify_finds_the_log_extends_the_sink(
    history: tuple[int, int, int, int, bool, bool],
) -> None:
    first, more, cut, regrow, restore_it, fresh = history

    async def run() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink, batch=7)
        await store.append(events(first, "a"))
        await checkpointer.checkpoint()
        await store.append(events(more, "b"))
        if more:
            await checkpointer.checkpoint()
        if restore_it:
            store._audit[:] = store._audit[: min(cut, len(store._audit))]
        await store.append(events(regrow, "c"))
        notes = await sink.notes()
        oracle = verify_log(await store.read(), notes[-1:], [SIGNER.vkey()], origin=ORIGIN)
        extends = oracle.ok or all(f.category is Category.UNANCHORED_TAIL for f in oracle.findings)
        signer = Checkpointer(store, SIGNER, ORIGIN, sink, batch=7) if fresh else checkpointer
        try:
            note = await signer.checkpoint()
        except LogForked:
            assert not extends, oracle.findings
            assert await sink.notes() == notes and not signer.healthy
        else:
            assert extends, "signed a log that does not extend the newest checkpoint"
            assert open_checkpoint(note, [SIGNER.vkey()]).size == len(store._audit)

    anyio.run(run)


async def readyz(gateway: Gateway) -> httpx.Response:
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        return await client.get("/readyz")


def gateway_on(store: object, checkpointer: Checkpointer) -> Gateway:
    built = build_gateway(load_settings(environ=ENV), store=store)
    return Gateway(
        built.settings, built.store, built.guard, proxies={}, minters={}, checkpointer=checkpointer
    )


def test_readyz_is_503_once_the_checkpointer_refused(
    restored: tuple[Path, DirectoryCheckpointSink],
) -> None:
    path, sink = restored

    async def scenario() -> None:
        store = SQLiteStore(path)
        gateway = gateway_on(store, Checkpointer(store, SIGNER, ORIGIN, sink))
        assert (await readyz(gateway)).status_code == 200
        with pytest.raises(LogForked):
            await gateway.checkpointer.checkpoint()  # type: ignore[union-attr]
        answer = await readyz(gateway)
        assert answer.status_code == 503
        assert answer.json()["unavailable"] == {"audit checkpointer": "LogForked"}
        await gateway.aclose()

    anyio.run(scenario)


def test_gateway_started_on_a_restored_snapshot_turns_unready(
    restored: tuple[Path, DirectoryCheckpointSink],
) -> None:
    """Over a real socket: the startup checkpoint refuses, and /readyz says so."""
    path, sink = restored
    before = sorted(p.name for p in sink.directory.iterdir())
    store = SQLiteStore(path)
    gateway = gateway_on(store, Checkpointer(store, SIGNER, ORIGIN, sink))
    with LoopbackServer(gateway.app, lifespan="on") as server:
        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline:
            status = httpx.get(server.url + "/readyz").status_code
            if status == 503:
                break
            time.sleep(0.02)
        assert status == 503
    assert sorted(p.name for p in sink.directory.iterdir()) == before
