"""Several SQLiteStore instances (threads, event loops, processes) on one file stay consistent."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio

from agentguard import KeyKind, KeyRecord
from agentguard.audit import Action, AuditEntry, AuditEvent, verify_chain
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory

T = TypeVar("T")


def event(clock: FakeClock, label: str) -> AuditEvent:
    return AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/crm/{label}")


def run_in_threads(jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run each job on its own event loop in its own thread, all released at once."""
    barrier = threading.Barrier(len(jobs))
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def runner(index: int) -> None:
        async def main() -> T:
            barrier.wait()
            return await jobs[index]()

        try:
            results[index] = anyio.run(main)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(jobs))]


async def seeded_refresh(path: Path, clock: FakeClock) -> KeyRecord:
    refresh = key_record(clock, kind=KeyKind.REFRESH)
    async with SQLiteStore(path, clock=clock) as store:
        await seed_directory(store)
        await store.insert_keys([refresh])
    return refresh


def test_rotation_across_instances_and_loops_has_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "agentguard.db"
    clock = FakeClock()
    refresh = anyio.run(seeded_refresh, path, clock)
    candidates = [[key_record(clock, family_id=refresh.family_id)] for _ in range(4 * 8)]

    def instance(index: int) -> Callable[[], Awaitable[list[bool]]]:
        async def attempts() -> list[bool]:
            results = [False] * 8
            async with SQLiteStore(path, clock=clock) as store:

                async def attempt(n: int) -> None:
                    new = candidates[index * 8 + n]
                    results[n] = await store.rotate(refresh.id, new, now=clock.now())

                async with anyio.create_task_group() as group:
                    for n in range(8):
                        group.start_soon(attempt, n)
            return results

        return attempts

    per_store = run_in_threads([instance(i) for i in range(4)])
    outcomes = [won for results in per_store for won in results]
    assert outcomes.count(True) == 1

    async def inserted() -> list[bool]:
        async with SQLiteStore(path, clock=clock) as store:
            return [await store.lookup(c[0].key_hash) is not None for c in candidates]

    assert anyio.run(inserted) == outcomes


async def read_log(path: Path) -> list[AuditEntry]:
    async with SQLiteStore(path) as store:
        return await store.read()


def test_audit_appends_from_instances_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "agentguard.db"
    clock = FakeClock()

    def instance(index: int) -> Callable[[], Awaitable[None]]:
        async def appends() -> None:
            async with SQLiteStore(path, clock=clock) as store:

                async def writer(task: int) -> None:
                    for n in range(10):
                        label = f"{index}-{task}-{n}"
                        if n % 3 == 0:
                            batch = [event(clock, f"{label}-{b}") for b in range(4)]
                            await store.append(batch)
                        else:
                            await store.append([event(clock, label)])

                async with anyio.create_task_group() as group:
                    for task in range(3):
                        group.start_soon(writer, task)

        return appends

    run_in_threads([instance(i) for i in range(3)])
    entries = anyio.run(read_log, path)
    expected = 3 * 3 * (4 * 4 + 6)
    assert [e.seq for e in entries] == list(range(expected))
    assert verify_chain(entries) is None
    assert len({e.event()["path"] for e in entries}) == expected
    # a batch is contiguous: its four events sit next to each other in the chain
    paths = [str(e.event()["path"]) for e in entries]
    for i, p in enumerate(paths):
        if p.endswith("-0-0"):
            assert [paths[i + b].rsplit("-", 1)[1] for b in range(4)] == ["0", "1", "2", "3"]


CHILD = r"""
import json, sys, time
from pathlib import Path

import anyio

from agentguard.audit import Action, AuditEvent
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record

path, refresh_id, family_id, index, rendezvous = sys.argv[1:]


async def main() -> None:
    clock = FakeClock()
    new = key_record(clock, family_id=family_id)
    async with SQLiteStore(path, clock=clock, timeout=30) as store:
        Path(rendezvous, f"ready-{index}").touch()
        while not Path(rendezvous, "go").exists():
            time.sleep(0.001)
        won = await store.rotate(refresh_id, [new], now=clock.now())
        claimed = await store.check_and_store(b"shared-jti", clock.now().replace(year=2100))
        for n in range(20):
            event = AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/p{index}/{n}")
            await store.append([event])
    print(json.dumps({"won": won, "claimed": claimed, "hash": new.key_hash.hex()}))


anyio.run(main)
"""


def test_processes_sharing_a_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "agentguard.db"
    clock = FakeClock()
    refresh = anyio.run(seeded_refresh, path, clock)
    arguments = [str(path), refresh.id, refresh.family_id]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *arguments, str(i), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(processes):
        assert time.monotonic() < deadline, "child processes did not start"
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    assert [r["won"] for r in reports].count(True) == 1
    assert [r["claimed"] for r in reports].count(True) == 1

    async def inserted() -> list[bool]:
        async with SQLiteStore(path, clock=clock) as store:
            return [await store.lookup(bytes.fromhex(r["hash"])) is not None for r in reports]

    assert anyio.run(inserted) == [r["won"] for r in reports]
    entries = anyio.run(read_log, path)
    assert [e.seq for e in entries] == list(range(4 * 20))
    assert verify_chain(entries) is None


def test_instances_opening_a_fresh_file_at_once_create_one_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"

    def instance(index: int) -> Callable[[], Awaitable[int]]:
        async def open_and_write() -> int:
            async with SQLiteStore(path) as store:
                entries = await store.append([event(FakeClock(), str(index))])
                return entries[0].seq

        return open_and_write

    seqs = run_in_threads([instance(i) for i in range(8)])
    assert sorted(seqs) == list(range(8))
    assert verify_chain(anyio.run(read_log, path)) is None
