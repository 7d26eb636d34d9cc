"""A restored old snapshot (a rollback, a fork) is caught before anything more is signed.

The checkpointer reads the newest checkpoint of its origin back from the sink and signs only a
log whose first ``m`` entries have that checkpoint's root. Here a SQLite file is copied, the log
grows and is anchored, the copy is put back, and the checkpointer must refuse: nothing new in
the sink, a CRITICAL alert, ``healthy`` false and ``/readyz`` 503. A hypothesis property
generates histories and checks the checkpointer against ``verify_log`` (the differential
oracle): it signs exactly when the log extends the sink's newest checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    Category,
    Checkpointer,
    CheckpointRefused,
    DirectoryCheckpointSink,
    Ed25519Signer,
    LogForked,
    MemoryCheckpointSink,
    canonical_json,
    leaf_hash,
    open_checkpoint,
    verify_log,
)
from agentguard.config import load_settings
from agentguard.gateway import Gateway, build_gateway
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


TAMPERED_FIELDS = ("hash", "prev", "body")
tampers = st.tuples(
    st.integers(min_value=1, max_value=25),  # events signed at the first checkpoint
    st.integers(min_value=0, max_value=10),  # events read and signed at a second one
    st.integers(min_value=0, max_value=8),  # events appended but not read yet
    st.sampled_from(TAMPERED_FIELDS),  # which stored field is rewritten
    st.integers(min_value=0, max_value=10**6),  # where (modulo the log's length)
    st.booleans(),  # reseal: the stored hash recomputed to match the edited body
    st.integers(min_value=0, max_value=6),  # events the gateway appends after the tamper
    st.booleans(),  # a fresh checkpointer (restarted) or the running one
)


def tamper(entry: AuditEntry, which: str, reseal: bool) -> AuditEntry:
    """``entry`` with one stored field rewritten, as someone with write access to the DB would."""
    if which == "hash":
        return AuditEntry(entry.seq, hashlib.sha256(b"forged" + entry.hash).digest(), entry.body)
    event = json.loads(entry.body)
    if which == "prev":
        event["prev"] = base64.b64encode(hashlib.sha256(event["prev"].encode()).digest()).decode()
    else:  # the same length: the row's size gives nothing away
        event["path"] = "/z" + event["path"][2:]
    body = canonical_json(event)
    return AuditEntry(entry.seq, leaf_hash(body) if reseal else entry.hash, body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tampers)
def test_checkpointer_signs_a_tampered_log_only_when_verify_finds_it_sound(
    case: tuple[int, int, int, str, int, bool, int, bool],
) -> None:
    """One stored field (hash, prev or body) rewritten before or after what was read.

    The oracle is ``verify_log`` over the whole log against the newest note: the checkpointer
    signs exactly when it finds the log sound and extending the sink, whether the running
    checkpointer (which read part of the log before the tamper) or a restarted one signs.
    """
    first, read_more, unread, which, where, reseal, after, fresh = case

    async def run() -> None:
        store, sink = MemoryStore(), MemoryCheckpointSink()
        checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink, batch=4)
        await store.append(events(first, "a"))
        await checkpointer.checkpoint()
        await store.append(events(read_more, "b"))
        await checkpointer.checkpoint()
        await store.append(events(unread, "c"))
        position = where % len(store._audit)
        store._audit[position] = tamper(store._audit[position], which, reseal)
        await store.append(events(after, "d"))  # chains onto the stored (maybe forged) hash
        notes = await sink.notes()
        oracle = verify_log(await store.read(), notes[-1:], [SIGNER.vkey()], origin=ORIGIN)
        signer = Checkpointer(store, SIGNER, ORIGIN, sink, batch=4) if fresh else checkpointer
        try:
            note = await signer.checkpoint()
        except CheckpointRefused:
            assert not oracle.ok, "refused a log that verify_log finds sound"
            assert await sink.notes() == notes and not signer.healthy
        else:
            assert oracle.ok, f"signed a tampered log: {oracle.first}"
            assert open_checkpoint(note, [SIGNER.vkey()]).size == len(store._audit)

    anyio.run(run)


def live_restore(snapshot: Path, path: Path) -> None:
    """Copy ``snapshot`` into the live database file with SQLite's backup API (store open)."""
    with closing(sqlite3.connect(snapshot)) as source, closing(sqlite3.connect(path)) as live:
        source.backup(live)


def forge_rows(path: Path, sql: str, *params: object) -> None:
    """Rewrite rows directly, the append-only triggers dropped first (a DB admin can)."""
    with closing(sqlite3.connect(path)) as db:
        triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for (name,) in triggers:
            db.execute(f'DROP TRIGGER "{name}"')
        db.execute(sql, params)
        db.commit()


@pytest.mark.anyio
async def test_running_checkpointer_refuses_a_fork_whose_head_hash_was_set_back(
    tmp_path: Path,
) -> None:
    """Restore size 4 into the live file, regrow to the signed 8, set seq 7's hash column back.

    The running checkpointer re-hashes the entry it read last from its body, so the stored
    hash it compared before is no longer enough: it refuses, now and at every later round.
    """
    path, snapshot = tmp_path / "audit.db", tmp_path / "snapshot.db"
    sink = DirectoryCheckpointSink(tmp_path / "checkpoints")
    async with SQLiteStore(path) as store:
        checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink)
        for event in events(4, "real"):
            await store.append([event])
        with closing(sqlite3.connect(path)) as live, closing(sqlite3.connect(snapshot)) as copy:
            live.backup(copy)
        await store.append(events(4, "gone"))
        await checkpointer.checkpoint()
        head = await store.head()
        assert head is not None
        live_restore(snapshot, path)
        await store.append(events(4, "forged"))
        forge_rows(path, "UPDATE audit SET hash = ? WHERE seq = 7", head.hash)
        signed = sorted(p.name for p in sink.directory.iterdir())
        for round_ in range(3):
            await store.append(events(3, f"after{round_}"))
            with pytest.raises(LogForked, match="seq 7 was replaced"):
                await checkpointer.checkpoint()
        assert not checkpointer.healthy
        assert sorted(p.name for p in sink.directory.iterdir()) == signed


@pytest.mark.anyio
async def test_running_checkpointer_refuses_an_old_body_rewritten_at_the_same_length(
    tmp_path: Path,
) -> None:
    path, sink = tmp_path / "audit.db", DirectoryCheckpointSink(tmp_path / "checkpoints")
    async with SQLiteStore(path) as store:
        checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink)
        await store.append(events(8, "a"))
        await checkpointer.checkpoint()
        old = (await store.read(2, 3))[0].body
        forge_rows(path, "UPDATE audit SET body = ? WHERE seq = 2", old.replace(b"/a/2", b"/z/2"))
        await store.append(events(2, "b"))
        with pytest.raises(LogForked, match="seq 2, read before, was rewritten"):
            await checkpointer.checkpoint()
        assert len(list(sink.directory.iterdir())) == 1


@pytest.mark.anyio
async def test_reverify_every_k_catches_an_old_rewrite_within_k_checkpoints() -> None:
    """The opt-out of the full re-read still re-hashes the last entry read every time."""
    store, sink = MemoryStore(), MemoryCheckpointSink()
    checkpointer = Checkpointer(store, SIGNER, ORIGIN, sink, reverify_every=3)
    await store.append(events(6, "a"))
    await checkpointer.checkpoint()  # round 1
    store._audit[1] = tamper(store._audit[1], "body", reseal=True)
    outcomes = []
    for round_ in range(2, 5):
        await store.append(events(1, f"r{round_}"))
        try:
            await checkpointer.checkpoint()
            outcomes.append("signed")
        except LogForked:
            outcomes.append("refused")
            break
    assert outcomes == ["signed", "refused"]  # round 3 re-read the prefix
    with pytest.raises(ValueError):
        Checkpointer(store, SIGNER, ORIGIN, sink, reverify_every=0)

    other = MemoryStore()
    head_forged = Checkpointer(other, SIGNER, ORIGIN, MemoryCheckpointSink(), reverify_every=1000)
    await other.append(events(4, "a"))
    await head_forged.checkpoint()
    other._audit[3] = tamper(other._audit[3], "body", reseal=False)
    with pytest.raises(LogForked, match="seq 3 was replaced"):
        await head_forged.checkpoint()


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
