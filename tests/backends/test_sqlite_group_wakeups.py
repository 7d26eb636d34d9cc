"""GroupCommit's hand-offs: one wake of the writer thread per group, one wake of each loop.

Calls queued while a drain is already scheduled ride on it instead of waking the writer thread
again, and a written group's asyncio callers are answered with one hand-off per event loop.
These tests pin that down, and that it never costs an answer: a call queued after a drain
started gets a drain of its own, a cancelled caller does not hold up its group, a write that
fails or miscounts fails every caller, and callers on two loops in two threads are each
answered on their own loop.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from agentguard.storage._sqlite._threads import ConnectionThread, GroupCommit
from tests.support.connection_threads import held

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


class Owner:
    """What a ConnectionThread belongs to (a store, in the library)."""


class Writer:
    """A group write that records each group, optionally pausing inside a write."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.inside = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.miscount = False

    def __call__(self, items: list[int]) -> list[int]:
        self.groups.append(list(items))
        self.inside.set()
        assert self.go.wait(DEADLINE), "the test never let the write finish"
        if self.miscount:
            return [item * 10 for item in items[1:]]
        return [item * 10 for item in items]


@contextmanager
def queue(write: Callable[[list[int]], list[int]]) -> Iterator[GroupCommit[int, int]]:
    owner = Owner()
    thread = ConnectionThread("test-writer", owner)
    try:
        yield GroupCommit(thread, write)
    finally:
        thread.stop()


@contextmanager
def watched_submits(
    commit: GroupCommit[int, int], first: Callable[[Callable[..., object]], None]
) -> Iterator[None]:
    """``first(job)`` runs before every job handed to the writer thread while the block runs
    (it may record the job, or raise as a thread that is gone does)."""
    thread = commit._thread
    original = thread.submit

    def submit(function: Callable[..., object], /, *args: object) -> None:
        first(function)
        original(function, *args)

    thread.submit = submit  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del thread.submit  # the class's method again


@contextmanager
def counted_submits(commit: GroupCommit[int, int]) -> Iterator[list[object]]:
    """Every drain of ``commit`` handed to the writer thread while the block runs."""
    submitted: list[object] = []

    def record(function: Callable[..., object]) -> None:
        if function == commit.drain:
            submitted.append(function)

    with watched_submits(commit, record):
        yield submitted


async def settle(count: int) -> None:
    for _ in range(count + 2):
        await asyncio.sleep(0)


@pytest.mark.parametrize("callers", [1, 2, 40])
async def test_calls_queued_together_wake_the_writer_thread_once(callers: int) -> None:
    write = Writer()
    with queue(write) as commit, counted_submits(commit) as submitted:
        with held(commit._thread) as release:
            calls = [asyncio.ensure_future(commit.submit(n)) for n in range(callers)]
            await settle(callers)
            assert len(submitted) == 1, "each queued call woke the writer thread again"
            release.set()
            answers = await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)
        assert answers == [n * 10 for n in range(callers)]
        assert write.groups == [list(range(callers))]
        # The drain has run: the next call must schedule one of its own, or it would wait
        # forever.
        assert await asyncio.wait_for(commit.submit(99), DEADLINE) == 990
        assert len(submitted) == 2


async def test_a_call_queued_while_a_group_is_being_written_gets_a_drain_of_its_own() -> None:
    write = Writer()
    write.go.clear()
    with queue(write) as commit:
        first = asyncio.ensure_future(commit.submit(1))
        assert await asyncio.to_thread(write.inside.wait, DEADLINE)
        later = asyncio.ensure_future(commit.submit(2))  # the drain already took its group
        await settle(1)
        write.go.set()
        assert list(await asyncio.wait_for(asyncio.gather(first, later), DEADLINE)) == [10, 20]
    assert write.groups == [[1], [2]]


async def test_a_caller_cancelled_while_its_group_is_written_leaves_the_rest_answered() -> None:
    write = Writer()
    with queue(write) as commit, held(commit._thread) as release:
        write.go.clear()
        calls = [asyncio.ensure_future(commit.submit(n)) for n in range(3)]
        await settle(3)
        release.set()
        assert await asyncio.to_thread(write.inside.wait, DEADLINE)
        calls[1].cancel()  # taken already: written to its end, the caller is gone
        await settle(1)
        write.go.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
    assert outcomes[0] == 0 and outcomes[2] == 20
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert write.groups == [[0, 1, 2]]


async def test_a_write_that_miscounts_its_results_fails_every_caller() -> None:
    write = Writer()
    write.miscount = True
    with queue(write) as commit, held(commit._thread) as release:
        calls = [asyncio.ensure_future(commit.submit(n)) for n in range(3)]
        await settle(3)
        release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes), outcomes


async def test_a_failed_write_fails_every_caller_and_the_queue_goes_on() -> None:
    failing = True

    def write(items: list[int]) -> list[int]:
        if failing:
            raise OSError("disk full")
        return items

    with queue(write) as commit:
        with held(commit._thread) as release:
            calls = [asyncio.ensure_future(commit.submit(n)) for n in range(4)]
            await settle(4)
            release.set()
            outcomes = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), DEADLINE
            )
        assert [type(outcome) for outcome in outcomes] == [OSError] * 4
        failing = False
        assert await asyncio.wait_for(commit.submit(7), DEADLINE) == 7


def test_callers_on_two_event_loops_are_each_answered_on_their_own_loop() -> None:
    write = Writer()
    with queue(write) as commit, held(commit._thread) as release:
        answers: dict[str, object] = {}
        queued = threading.Barrier(3, timeout=DEADLINE)

        def caller(name: str, base: int) -> None:
            async def run() -> list[tuple[int, bool]]:
                loop = asyncio.get_running_loop()

                async def one(n: int) -> tuple[int, bool]:
                    answer = await commit.submit(n)
                    return answer, asyncio.get_running_loop() is loop

                calls = [asyncio.ensure_future(one(base + n)) for n in range(5)]
                await settle(5)
                await asyncio.to_thread(queued.wait)
                return await asyncio.wait_for(asyncio.gather(*calls), DEADLINE)

            try:
                answers[name] = asyncio.run(run())
            except BaseException as error:  # reported by the assertion below
                answers[name] = error

        threads = [
            threading.Thread(target=caller, args=(name, base))
            for name, base in (("a", 0), ("b", 100))
        ]
        for thread in threads:
            thread.start()
        queued.wait()  # both loops have queued their calls behind the held writer
        release.set()
        for thread in threads:
            thread.join(DEADLINE)
        assert not any(thread.is_alive() for thread in threads)
    assert answers["a"] == [(n * 10, True) for n in range(5)]
    assert answers["b"] == [((100 + n) * 10, True) for n in range(5)]
    assert sorted(item for group in write.groups for item in group) == [
        *range(5),
        *range(100, 105),
    ]


class WriterStopped(BaseException):
    """Not an Exception: what ends a drain instead of failing only its group."""


async def test_a_drain_that_dies_leaves_no_call_queued_without_a_drain() -> None:
    """A write raising what is not an Exception ends that drain; the calls still queued behind
    its group are drained by another."""
    calls_seen: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        calls_seen.append(list(items))
        if len(calls_seen) == 1:
            raise WriterStopped
        return items

    with queue(write) as commit, held(commit._thread) as release:
        commit.max_size = 1  # one call per group: the second group is still queued
        calls = [asyncio.ensure_future(commit.submit(n)) for n in range(3)]
        await settle(3)
        release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
    assert isinstance(outcomes[0], WriterStopped)
    assert outcomes[1:] == [1, 2]


@contextmanager
def writer_thread_gone(commit: GroupCommit[int, int]) -> Iterator[list[bool]]:
    """The writer thread refusing new jobs (as at interpreter exit) once ``gone[0]`` is set."""
    gone = [False]

    def refuse(function: Callable[..., object]) -> None:
        if gone[0]:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    with watched_submits(commit, refuse):
        yield gone


async def test_a_drain_that_dies_as_the_thread_goes_leaves_the_queue_to_the_next_call() -> None:
    seen: list[list[int]] = []

    def write(items: list[int]) -> list[int]:
        seen.append(list(items))
        if len(seen) == 1:
            gone[0] = True
            raise WriterStopped
        return items

    with (
        queue(write) as commit,
        writer_thread_gone(commit) as gone,
        held(commit._thread) as release,
    ):
        commit.max_size = 1
        calls = [asyncio.ensure_future(commit.submit(n)) for n in range(2)]
        await settle(2)
        release.set()
        done, _ = await asyncio.wait({calls[0]}, timeout=DEADLINE)
        assert done == {calls[0]}, "the first group was never answered"
        # No drain could be scheduled for the call left queued; the next call drains it all
        # on anyio's threads instead of trusting a drain that will never come.
        later = await asyncio.wait_for(commit.submit(5), DEADLINE)
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
    assert later == 5
    assert isinstance(outcomes[0], WriterStopped) and outcomes[1] == 1


async def test_a_call_that_falls_back_to_anyio_threads_leaves_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def write(items: list[int]) -> list[int]:
        raise OSError("disk full")

    with queue(write) as commit, writer_thread_gone(commit) as gone:
        gone[0] = True
        with pytest.raises(OSError, match="disk full"):
            await asyncio.wait_for(commit.submit(1), DEADLINE)
        await settle(3)
    gc.collect()  # an asyncio future dropped with an unretrieved error logs as it is collected
    await settle(3)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_write_raising_stopiteration_fails_its_callers_instead_of_hanging() -> None:
    def write(items: list[int]) -> list[int]:
        raise StopIteration

    with queue(write) as commit, held(commit._thread) as release:
        calls = [asyncio.ensure_future(commit.submit(n)) for n in range(3)]
        await settle(3)
        release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), DEADLINE)
    assert all(
        isinstance(outcome, RuntimeError) and isinstance(outcome.__cause__, StopIteration)
        for outcome in outcomes
    ), outcomes
