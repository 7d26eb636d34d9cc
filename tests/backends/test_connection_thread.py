"""ConnectionThread: a SQLite connection's own thread, fed by a queue, answering on each loop.

The hand-off is the store's hot path (every key lookup and credential read crosses it), so it
is hand-written rather than a thread pool; these tests hold it to what the pool promised: calls
run in order, a call cancelled before it runs never runs, what a job raises reaches its caller
and never ends the thread, every call is answered on its own loop even while the thread is being
stopped from elsewhere, and a thread whose owner is gone ends.
"""

from __future__ import annotations

import asyncio
import gc
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentguard.storage._sqlite._threads import ConnectionThread
from tests.support.connection_threads import held

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


class Owner:
    """What a ConnectionThread belongs to (a store, in the library)."""


@contextmanager
def running(name: str = "test-connection") -> Iterator[ConnectionThread]:
    owner = Owner()
    thread = ConnectionThread(name, owner)
    try:
        yield thread
    finally:
        thread.stop()


def threads_named(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


async def wait_until_gone(name: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while threads_named(name):
        assert asyncio.get_running_loop().time() < deadline, f"{name} still runs"
        await asyncio.sleep(0.01)


async def test_calls_run_in_order_on_one_thread() -> None:
    ran: list[tuple[int, int]] = []

    def record(n: int) -> int:
        ran.append((n, threading.get_ident()))
        return n * 2

    with running() as thread:
        answers = await asyncio.wait_for(
            asyncio.gather(*(thread.call(record, n) for n in range(50))), DEADLINE
        )
    assert answers == [n * 2 for n in range(50)]
    assert [n for n, _ in ran] == list(range(50))
    assert len({ident for _, ident in ran}) == 1
    assert threading.get_ident() not in {ident for _, ident in ran}


async def test_a_call_cancelled_while_queued_never_runs() -> None:
    ran: list[str] = []
    with running() as thread, held(thread) as release:
        kept = asyncio.ensure_future(thread.call(ran.append, "kept"))
        dropped = asyncio.ensure_future(thread.call(ran.append, "dropped"))
        after = asyncio.ensure_future(thread.call(ran.append, "after"))
        await asyncio.sleep(0)
        dropped.cancel()
        release.set()
        await asyncio.wait_for(asyncio.gather(kept, after), DEADLINE)
        with pytest.raises(asyncio.CancelledError):
            await dropped
    assert ran == ["kept", "after"]


async def test_a_call_cancelled_while_running_runs_to_its_end() -> None:
    inside, go = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow() -> str:
        inside.set()
        go.wait(DEADLINE)
        finished.append(True)
        return "done"

    with running() as thread:
        call = asyncio.ensure_future(thread.call(slow))
        assert await asyncio.to_thread(inside.wait, DEADLINE)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        go.set()
        assert await asyncio.wait_for(thread.call(lambda: "next"), DEADLINE) == "next"
    assert finished == [True]


class Stop(BaseException):
    """Not an Exception: what a thread pool's worker also survives."""


@pytest.mark.parametrize("error", [ValueError("bad"), Stop(), KeyError("k")])
async def test_what_a_call_raises_reaches_its_caller_and_the_thread_goes_on(
    error: BaseException,
) -> None:
    def fail() -> None:
        raise error

    with running() as thread:
        with pytest.raises(type(error)) as raised:
            await asyncio.wait_for(thread.call(fail), DEADLINE)
        assert raised.value is error
        thread.submit(fail)  # unanswered: dropped, and the thread goes on
        assert await asyncio.wait_for(thread.call(lambda: 7), DEADLINE) == 7


async def test_a_call_raising_stopiteration_fails_instead_of_hanging() -> None:
    def stop() -> None:
        raise StopIteration

    with running() as thread, pytest.raises(RuntimeError, match="StopIteration") as raised:
        await asyncio.wait_for(thread.call(stop), DEADLINE)
    assert isinstance(raised.value.__cause__, StopIteration)


def test_callers_on_several_loops_are_each_answered_on_their_own() -> None:
    with running() as thread:
        outcomes: dict[int, object] = {}

        def caller(n: int) -> None:
            async def run() -> list[bool]:
                loop = asyncio.get_running_loop()

                async def one(k: int) -> bool:
                    assert await thread.call(lambda: k) == k
                    return asyncio.get_running_loop() is loop

                return list(await asyncio.gather(*(one(k) for k in range(40))))

            try:
                outcomes[n] = asyncio.run(run())
            except BaseException as error:  # reported by the assertion below
                outcomes[n] = error

        callers = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
        for each in callers:
            each.start()
        for each in callers:
            each.join(DEADLINE)
        assert not any(each.is_alive() for each in callers)
    assert outcomes == {n: [True] * 40 for n in range(4)}


class SlowPut(queue.SimpleQueue):  # type: ignore[type-arg]
    """A job queue whose puts first let other threads run: widens the window between picking
    the queue and putting on it, where a ``stop`` from another thread must not slip in."""

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        time.sleep(0.0005)
        super().put(item)


def test_calls_racing_stop_from_other_threads_are_all_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``stop`` swaps the queue while other threads' loops put calls on it: none may land on a
    queue whose thread has been told to end (that call would never be answered)."""
    monkeypatch.setattr(queue, "SimpleQueue", SlowPut)  # what _threads makes its queues of
    owner = Owner()
    thread = ConnectionThread("test-stop-race", owner)
    outcomes: dict[int, object] = {}
    done = threading.Event()

    def caller(n: int) -> None:
        async def run() -> int:
            answered = 0
            for k in range(200):
                assert await asyncio.wait_for(thread.call(int, k), DEADLINE) == k
                answered += 1
            return answered

        try:
            outcomes[n] = asyncio.run(run())
        except BaseException as error:  # reported by the assertion below
            outcomes[n] = error

    def stopper() -> None:
        while not done.is_set():
            thread.stop()
            time.sleep(0.0003)

    callers = [threading.Thread(target=caller, args=(n,)) for n in range(3)]
    stopping = threading.Thread(target=stopper)
    stopping.start()
    for each in callers:
        each.start()
    for each in callers:
        each.join(DEADLINE * 6)
    done.set()
    stopping.join(DEADLINE)
    thread.stop()
    assert outcomes == dict.fromkeys(range(3), 200)


def test_a_loop_closed_while_its_call_runs_does_not_end_the_thread() -> None:
    with running() as thread:
        inside, go = threading.Event(), threading.Event()

        def slow() -> int:
            inside.set()
            go.wait(DEADLINE)
            return 1

        loop = asyncio.new_event_loop()
        task = loop.create_task(thread.call(slow))
        loop.run_until_complete(asyncio.sleep(0))  # the call is queued
        assert inside.wait(DEADLINE)
        loop.close()  # its caller's loop is gone, the call still running
        go.set()
        assert asyncio.run(asyncio.wait_for(thread.call(int, 2), DEADLINE)) == 2
        del task


async def test_stop_lets_queued_calls_finish_and_a_later_call_starts_a_new_thread() -> None:
    name = "test-stop-restart"
    ran: list[int] = []
    with running(name) as thread:
        with held(thread) as release:
            queued = [asyncio.ensure_future(thread.call(ran.append, n)) for n in range(3)]
            await asyncio.sleep(0)
            thread.stop()
            release.set()
            await asyncio.wait_for(asyncio.gather(*queued), DEADLINE)
        await wait_until_gone(name)
        assert await asyncio.wait_for(thread.call(lambda: "again"), DEADLINE) == "again"
        assert len(threads_named(name)) == 1
    await wait_until_gone(name)
    assert ran == [0, 1, 2]


async def collected(event: threading.Event) -> None:
    """Collect garbage until ``event`` is set (its finalizer ran), within the deadline."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not event.is_set():
        assert asyncio.get_running_loop().time() < deadline, "never collected"
        gc.collect()
        await asyncio.sleep(0.01)


async def test_a_thread_whose_owner_is_collected_ends_and_a_later_call_starts_another() -> None:
    name = "test-owner-collected"
    owner = Owner()
    gone = threading.Event()
    weakref.finalize(owner, gone.set)
    thread = ConnectionThread(name, owner)
    assert await asyncio.wait_for(thread.call(int, 1), DEADLINE) == 1
    assert len(threads_named(name)) == 1
    del owner
    await collected(gone)
    await wait_until_gone(name)
    # Nothing should call through a collected owner's thread, but if something does it is
    # answered by a fresh thread, never left on the retired queue.
    assert await asyncio.wait_for(thread.call(int, 2), DEADLINE) == 2
    thread.stop()
    await wait_until_gone(name)


async def test_the_thread_keeps_no_reference_to_its_last_job() -> None:
    """A finished job's function (a store's bound method) must not be held by the waiting
    thread, or the store could never be collected and its finalizer never stop the thread."""
    name = "test-no-last-job"
    owner = Owner()
    thread = ConnectionThread(name, owner)

    class Payload:
        def work(self) -> int:
            return 3

    payload = Payload()
    freed = threading.Event()
    weakref.finalize(payload, freed.set)
    assert await asyncio.wait_for(thread.call(payload.work), DEADLINE) == 3
    del payload
    await collected(freed)  # the thread drops the job just after answering: poll for it
    del owner
    gc.collect()
    await wait_until_gone(name)


def run_child(
    tmp_path: Path, script: str, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``script`` run in a fresh interpreter (``subprocess.TimeoutExpired`` past ``timeout``)."""
    path = tmp_path / "child.py"
    path.write_text(script)
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


REENTRANT_SCRIPT = """
import asyncio, queue
from agentguard.storage._sqlite._threads import ConnectionThread

class Owner: ...

owner = Owner()
connection = ConnectionThread("reentrant-stop", owner)
made = queue.SimpleQueue

class StopsWhileMade(made):
    def __init__(self):
        super().__init__()
        connection.stop()  # as a finalizer run by a collection at this allocation would

queue.SimpleQueue = StopsWhileMade  # what the module makes its job queues of
answer = asyncio.run(asyncio.wait_for(connection.call(int, 3), 10))
queue.SimpleQueue = made
print("answered:", answer, flush=True)
"""


def test_a_stop_from_a_finalizer_inside_put_does_not_deadlock(tmp_path: Path) -> None:
    """Starting the thread allocates, which can run the garbage collector, whose finalizers
    (an abandoned ``close()`` of the same store) may call ``stop()`` on the same thread while
    ``_put`` holds the lock: it must not wait on itself (in a child process: a deadlock there
    would also hang its exit)."""
    try:
        done = run_child(tmp_path, REENTRANT_SCRIPT, timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail("stop() inside _put waited on the lock _put holds")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["answered: 3"]


EXIT_SCRIPT = """
import asyncio, atexit, sys, threading, time

class Owner: ...

owner = Owner()
mode = sys.argv[1]
if mode == "first-used-after-main-returned":
    # a non-daemon thread that first imports and uses the module once the main thread has
    # returned (the interpreter's shutdown has begun): the call still runs
    def late():
        time.sleep(0.3)
        from agentguard.storage._sqlite._threads import ConnectionThread
        connection = ConnectionThread("exit-test", owner)
        print("late:", asyncio.run(connection.call(int, 5)), flush=True)
    threading.Thread(target=late).start()
    sys.exit(0)
from agentguard.storage._sqlite._threads import ConnectionThread
connection = ConnectionThread("exit-test", owner)
if mode == "hook-before-first-use":
    # registered before the thread exists: runs after the threads were ended at exit
    atexit.register(lambda: print("hook:", asyncio.run(connection.call(int, 7)), flush=True))
    print("first:", asyncio.run(connection.call(int, 1)), flush=True)
elif mode == "running-at-exit":
    def slow():
        time.sleep(0.5)
        print("slow job finished", flush=True)
    async def main():
        try:
            await asyncio.wait_for(connection.call(slow), 0.05)
        except asyncio.TimeoutError:
            print("caller gave up", flush=True)
    asyncio.run(main())
    connection.submit(lambda: print("queued job finished", flush=True))
"""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("hook-before-first-use", ["first: 1", "hook: 7"]),
        ("first-used-after-main-returned", ["late: 5"]),
        ("running-at-exit", ["caller gave up", "slow job finished", "queued job finished"]),
    ],
)
def test_at_exit_work_already_queued_finishes_and_later_calls_are_answered(
    tmp_path: Path, mode: str, expected: list[str]
) -> None:
    done = run_child(tmp_path, EXIT_SCRIPT, mode, timeout=DEADLINE * 3)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected
