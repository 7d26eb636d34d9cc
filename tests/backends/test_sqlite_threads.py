"""SQLiteStore's connection thread: group commit of audit appends and replay claims, fork and exit.

The writer thread is held busy on purpose (a job that waits on an event) so that what queues
behind it is known exactly, instead of hoping calls overlap.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from agentguard.audit import Action, AuditEntry, AuditEvent, verify_chain
from agentguard.storage import StorageError
from agentguard.storage._sqlite import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory
from tests.support.connection_threads import held

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


def event(clock: FakeClock, caller: int, n: int) -> AuditEvent:
    return AuditEvent(
        action=Action.KEY_ISSUE, ts=clock.now(), key_id=f"key_{caller}_{n}", user_id="u1"
    )


def key_ids(entries: list[AuditEntry]) -> list[object]:
    return [json.loads(entry.body)["actor"]["key_id"] for entry in entries]


@asynccontextmanager
async def traced_store(
    path: Path, clock: FakeClock
) -> AsyncIterator[tuple[SQLiteStore, list[str]]]:
    async with SQLiteStore(path, clock=clock) as store:
        statements: list[str] = []
        assert store._connection is not None
        store._connection.set_trace_callback(statements.append)
        yield store, statements


async def queued(count: int) -> None:
    """Let ``count`` freshly started tasks reach their first await."""
    for _ in range(count + 2):
        await asyncio.sleep(0)


@pytest.mark.parametrize("callers", [2, 17, 64])
async def test_appends_made_together_share_one_transaction(tmp_path: Path, callers: int) -> None:
    clock = FakeClock()
    async with traced_store(tmp_path / "db.sqlite", clock) as (store, statements):
        with held(store._writer) as release:
            calls = [
                asyncio.ensure_future(store.append([event(clock, c, n) for n in range(1 + c % 3)]))
                for c in range(callers)
            ]
            await queued(callers)
            release.set()
            results = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)
        entries = await store.read()
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    assert verify_chain(entries) is None
    seqs = [[entry.seq for entry in result] for result in results]
    for caller, (got, sealed) in enumerate(zip(seqs, results, strict=True)):
        assert len(got) == 1 + caller % 3
        assert got == list(range(got[0], got[0] + len(got))), "one call's events were split"
        assert [e.body for e in sealed] == [entries[s].body for s in got]
    assert sorted(s for group in seqs for s in group) == list(range(len(entries)))


@pytest.mark.parametrize(("callers", "distinct"), [(2, 1), (32, 8), (64, 64)])
async def test_replay_claims_made_together_share_one_transaction_and_one_claim_per_key_wins(
    tmp_path: Path, callers: int, distinct: int
) -> None:
    clock = FakeClock()
    until = clock.now() + timedelta(minutes=5)
    async with traced_store(tmp_path / "db.sqlite", clock) as (store, statements):
        taken = bytes([0xEE]) * 32
        assert await store.check_and_store(taken, until)  # claimed before: stays refused
        statements.clear()
        keys = [bytes([c % distinct]) * 32 for c in range(callers)] + [taken]
        with held(store._writer) as release:
            calls = [asyncio.ensure_future(store.check_and_store(key, until)) for key in keys]
            await queued(len(keys))
            release.set()
            won = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)
        clock.advance(timedelta(minutes=6))  # every claim has expired: each key is free again
        again = await asyncio.gather(*(store.check_and_store(key, until) for key in keys[:1]))
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 2
    firsts = {key: keys.index(key) for key in keys[:-1]}
    assert won == [firsts.get(key) == n for n, key in enumerate(keys)]
    assert again == [True]


async def test_a_group_is_capped_and_a_large_call_goes_whole(tmp_path: Path) -> None:
    clock = FakeClock()
    async with traced_store(tmp_path / "db.sqlite", clock) as (store, statements):
        store._appends.max_size = 4
        with held(store._writer) as release:
            sizes = [3, 3, 9, 1]
            calls = [
                asyncio.ensure_future(store.append([event(clock, c, n) for n in range(size)]))
                for c, size in enumerate(sizes)
            ]
            await queued(len(sizes))
            release.set()
            results = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)
        entries = await store.read()
    # [3], [3], [9] and [1] each: 3+3 > 4, 3+9 > 4, 9+1 > 4.
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 4
    assert [len(result) for result in results] == sizes
    assert verify_chain(entries) is None and len(entries) == sum(sizes)


async def test_a_call_cancelled_while_queued_is_never_written(tmp_path: Path) -> None:
    clock = FakeClock()
    async with SQLiteStore(tmp_path / "db.sqlite", clock=clock) as store:
        with held(store._writer) as release:
            kept = asyncio.ensure_future(store.append([event(clock, 0, 0)]))
            dropped = asyncio.ensure_future(store.append([event(clock, 1, 0)]))
            await queued(2)
            dropped.cancel()
            await queued(1)
            release.set()
            assert [e.seq for e in await asyncio.wait_for(kept, DEADLINE)] == [0]
        with pytest.raises(asyncio.CancelledError):
            await dropped
        entries = await store.read()
    assert key_ids(entries) == ["key_0_0"]


async def test_a_failed_group_fails_every_caller_and_stores_none_of_it(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "db.sqlite"
    async with SQLiteStore(path, clock=clock) as store:
        await store.append([event(clock, 9, 0)])
        with held(store._writer) as release:
            calls = [asyncio.ensure_future(store.append([event(clock, c, 0)])) for c in range(3)]
            await queued(3)
            assert store._connection is not None
            store._connection.close()  # the driver fails on the group's first statement
            release.set()
            outcomes = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), DEADLINE
            )
    assert all(isinstance(outcome, StorageError) for outcome in outcomes), outcomes
    async with SQLiteStore(path, clock=clock) as reopened:
        assert key_ids(await reopened.read()) == ["key_9_0"]


async def test_a_write_is_visible_to_the_next_read(tmp_path: Path) -> None:
    clock = FakeClock()
    async with SQLiteStore(tmp_path / "db.sqlite", clock=clock) as store:
        await seed_directory(store)
        for n in range(20):
            record = key_record(clock)
            await store.insert_keys([record])
            assert await store.lookup(record.key_hash) is not None, n
            await store.revoke(key_id=record.id, reason="test", now=clock.now())
            found = await store.lookup(record.key_hash)
            assert found is not None and found.key.revoked_at is not None, n


def test_appends_under_trio_form_one_chain(tmp_path: Path) -> None:
    """Outside asyncio the store falls back to anyio's threads; appends still form one chain."""
    clock = FakeClock()
    path = tmp_path / "db.sqlite"

    async def main() -> tuple[list[list[int]], list[AuditEntry]]:
        results: list[list[int]] = []
        async with SQLiteStore(path, clock=clock) as store:

            async def one(caller: int) -> None:
                sealed = await store.append([event(clock, caller, n) for n in range(3)])
                results.append([entry.seq for entry in sealed])

            async with anyio.create_task_group() as group:
                for caller in range(12):
                    group.start_soon(one, caller)
            return results, await store.read()

    results, entries = anyio.run(main, backend="trio")
    assert verify_chain(entries) is None and len(entries) == 36
    assert all(seqs == list(range(seqs[0], seqs[0] + 3)) for seqs in results)


async def test_a_closed_store_stops_its_threads(tmp_path: Path) -> None:
    clock = FakeClock()
    before = {thread.name for thread in threading.enumerate()}
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.initialize()
    await store.append([event(clock, 0, 0)])
    await store.list_users()
    await store.close()
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        extra = {
            thread.name
            for thread in threading.enumerate()
            if thread.name.startswith("agentguard-sqlite") and thread.name not in before
        }
        if not extra or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    assert not extra
    with pytest.raises(StorageError, match="closed"):
        await store.lookup(b"x" * 32)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
async def test_a_forked_child_gets_threads_of_its_own(tmp_path: Path) -> None:
    """The parent's store threads do not exist in a forked child: the child's first call starts
    its own instead of queueing behind a thread that is gone."""
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.initialize()
    await store.append([event(clock, 0, 0)])
    thread = store._writer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only an exit code
        signal.alarm(10)
        try:
            answered = asyncio.run(thread.call(os.getpid)) == os.getpid()
        finally:
            os._exit(0 if answered else 1)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    await store.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_calls_cancelled_under_trio_before_they_run_are_never_written(tmp_path: Path) -> None:
    """Trio delivers a pending cancel at the hand-off to anyio's thread: the queued call must
    leave the queue unwritten, or the next call's drain would write it for nobody."""
    clock = FakeClock()
    until = clock.now() + timedelta(minutes=5)
    key = b"c" * 32

    async def main() -> tuple[bool, list[AuditEntry]]:
        async with SQLiteStore(tmp_path / "db.sqlite", clock=clock) as store:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await store.check_and_store(key, until)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await store.append([event(clock, 1, 0)])
            await store.append([event(clock, 2, 0)])
            return await store.check_and_store(key, until), await store.read()

    claimed, entries = anyio.run(main, backend="trio")
    assert claimed, "a cancelled claim was written later and took the key"
    assert key_ids(entries) == ["key_2_0"]


async def test_a_key_that_is_not_bytes_fails_alone_not_its_group(tmp_path: Path) -> None:
    clock = FakeClock()
    until = clock.now() + timedelta(minutes=5)
    async with SQLiteStore(tmp_path / "db.sqlite", clock=clock) as store:
        with held(store._writer) as release:
            good = [
                asyncio.ensure_future(store.check_and_store(bytes([n]) * 32, until)) for n in (1, 2)
            ]
            bad = asyncio.ensure_future(store.check_and_store("not bytes", until))  # type: ignore[arg-type]
            await queued(3)
            release.set()
            assert await asyncio.wait_for(asyncio.gather(*good), DEADLINE) == [True, True]
        with pytest.raises(StorageError, match="bytes"):
            await bad


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
async def test_a_forked_child_does_not_write_what_the_parent_queued(tmp_path: Path) -> None:
    """A call queued when the process forks is the parent's to write: the child's queues start
    empty (its first write would otherwise write the parent's queued calls a second time). The
    child runs no SQL: SQLite connections must not be used across a fork."""
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.initialize()
    with held(store._writer) as release:
        pending = asyncio.ensure_future(store.append([event(clock, 1, 0)]))
        claim = asyncio.ensure_future(store.check_and_store(b"k" * 32, clock.now()))
        await queued(2)
        assert len(store._appends._queue) == 1 and len(store._claims._queue) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:  # the child: no pytest from here on, only an exit code
            queues = (store._appends, store._claims)
            empty = all(not q._queue and q._draining.acquire(blocking=False) for q in queues)
            os._exit(0 if empty else 1)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        release.set()
        await asyncio.wait_for(asyncio.gather(pending, claim), DEADLINE)
    entries = await store.read()
    await store.close()
    assert os.waitstatus_to_exitcode(status) == 0, "the child kept the parent's queued calls"
    assert key_ids(entries) == ["key_1_0"]
