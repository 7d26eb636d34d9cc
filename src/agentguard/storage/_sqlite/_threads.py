"""Where a SQLiteStore's SQL runs: one thread per connection, and writes committed in groups.

A store's connection has one thread of its own that runs its calls in order, fed by a
``queue.SimpleQueue``: handing work to it from an asyncio loop costs about a tenth of what
``anyio.to_thread`` costs, and one thread per connection means its lock is never contended on the
hot path. Outside asyncio (trio, through anyio) calls go through ``anyio.to_thread`` and the
connection's lock as before; both ways take the same lock, so they mix safely.

:class:`GroupCommit` is a write queue (audit appends, replay claims): each call queues its item and
wakes the writer thread unless a wake is already on its way, and the thread writes everything
queued so far in one transaction (one fsync), then answers every caller in it with one hand-off
to each event loop they wait on. One call's item (an append's events) is never split, a call
cancelled while still queued is dropped unwritten, and if the transaction fails every caller in it
gets the error and nothing of it is stored: the same contract as PostgreSQL's ``AuditBatcher``.

A cancelled call either never ran (it was still queued) or runs to its end in its thread; the
caller does not wait for that end.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio.to_thread

__all__ = ["ConnectionThread", "GroupCommit"]

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")

_MAX_GROUP_SIZE = 256

# A connection thread's job: the function, its arguments, and for a call awaited on an asyncio
# loop the future its outcome goes to and that loop (both None for a job nobody awaits).
_Job = tuple[
    Callable[..., Any],
    tuple[object, ...],
    asyncio.Future[Any] | None,
    asyncio.AbstractEventLoop | None,
]


_LIVE: weakref.WeakSet[ConnectionThread] = weakref.WeakSet()


_QUEUES: weakref.WeakSet[GroupCommit[Any, Any]] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child the threads are gone (and a lock may be held by one of them): start
    afresh on first use. What the parent had queued is the parent's to write: the child forgets
    it, or it would be written twice."""
    global _hooking  # noqa: PLW0603 - a thread of the parent may have held it at the fork
    _hooking = threading.Lock()
    for thread in list(_LIVE):
        thread.lock = threading.Lock()
        thread._create = threading.RLock()
        thread._jobs = thread._thread = None
    for commit in list(_QUEUES):
        commit._queue = deque()
        commit._draining = threading.Lock()
        commit._scheduled = False


class ConnectionThread:
    """One thread that runs every call of one connection, in order.

    ``lock`` guards the connection (whoever runs SQL on it holds it); the thread is started
    on first use and stopped by :meth:`stop` or when ``owner`` is collected.

    Jobs travel on a ``queue.SimpleQueue`` (C, lock-free for the caller) and a call's outcome
    comes back with one ``call_soon_threadsafe`` onto the caller's loop: no
    ``concurrent.futures.Future`` (a ``Condition`` and its locks per call) and no executor
    bookkeeping. With 32 concurrent callers on one pinned core a hand-off costs about 5 µs of
    CPU this way against about 15 µs through ``loop.run_in_executor`` (``docs/performance.md``).
    At interpreter exit every thread finishes what is queued on it and is joined, as a thread
    pool's workers are; calls made after that (atexit hooks closing stores) run on anyio's
    threads.
    """

    def __init__(self, name: str, owner: object) -> None:
        self.lock = threading.Lock()
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._thread: threading.Thread | None = None
        self._owner = weakref.ref(owner)
        # Reentrant: creating the thread can run the garbage collector, and a finalizer it
        # runs (an abandoned close() of this store) may call stop() on this same thread.
        self._create = threading.RLock()
        _LIVE.add(self)

    def _put(self, job: _Job) -> None:
        """Queue ``job`` for the thread, starting it first if it is not running.

        Under ``_create``, as :meth:`stop` swaps the queue: a job is never put on a queue
        whose thread has already been told to end. ``RuntimeError`` once the interpreter is
        exiting (no new threads then; callers fall back to anyio's).
        """
        with self._create:
            jobs = self._jobs
            if jobs is None:
                if _exiting:
                    raise RuntimeError("the interpreter is exiting: no new connection threads")
                _hook_exit()
                jobs = queue.SimpleQueue()
                thread = threading.Thread(target=_serve, args=(jobs,), name=self._name)
                thread.daemon = True  # joined at exit by _at_exit, after its queued work
                thread.start()
                owner = self._owner()
                if owner is None:  # nobody can call through it again: this job, then the end
                    jobs.put(job)
                    jobs.put(None)
                    return
                # a store nobody closed still stops its thread once it is collected
                retire = weakref.finalize(owner, _retire, weakref.ref(self), jobs)
                retire.atexit = False  # at exit, _at_exit ends and joins every thread
                self._jobs, self._thread = jobs, thread
            jobs.put(job)

    def submit(self, function: Callable[..., object], *args: object) -> None:
        """Run ``function(*args)`` on the thread, unanswered (what it raises is dropped);
        ``RuntimeError`` when no thread can be started (interpreter exit)."""
        self._put((function, args, None, None))

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the connection's thread (asyncio), else on anyio's threads.

        Cancelled before the thread reaches it, the call never runs; once running, it runs
        to its end and its outcome is dropped.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio (or another anyio backend): its own worker threads
            return await anyio.to_thread.run_sync(function, *args)
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._put((function, args, future, loop))
        except RuntimeError:  # at interpreter exit (atexit hooks closing stores): no new threads
            return await anyio.to_thread.run_sync(function, *args)
        return await future

    def stop(self) -> threading.Thread | None:
        """Let queued calls finish, then stop the thread (it is started again if called);
        the thread told to end, if one was running."""
        with self._create:
            jobs, thread = self._jobs, self._thread
            self._jobs = self._thread = None
        if jobs is not None:
            jobs.put(None)
        return thread


def _retire(ref: weakref.ref[ConnectionThread], jobs: queue.SimpleQueue[_Job | None]) -> None:
    """Its owner is gone: end the thread serving ``jobs``; a later call starts a fresh one.

    Runs from the garbage collector, maybe inside ``_put`` on this thread, so it takes no
    lock (the owner is gone: nobody calls through it any more).
    """
    thread = ref()
    if thread is not None and thread._jobs is jobs:
        thread._jobs = thread._thread = None
    jobs.put(None)


_exiting = False
_hooking = threading.Lock()
_hooked = False


def _hook_exit() -> None:
    """Register :func:`_at_exit` once, as the first thread starts: threading's own exit hooks
    run before the interpreter joins its threads and before atexit's (concurrent.futures joins
    its pools from there); atexit's is the fallback elsewhere. ``RuntimeError`` once shutdown
    has begun (a store first used then): callers fall back to anyio's threads."""
    global _hooked  # noqa: PLW0603 - once per process (a forked child keeps the parent's hook)
    with _hooking:
        if _hooked:
            return
        register = getattr(threading, "_register_atexit", None)
        if callable(register):
            register(_at_exit)
        else:  # pragma: no cover - CPython has it
            atexit.register(_at_exit)
        _hooked = True


def _at_exit() -> None:
    """At interpreter exit: no new threads; each running one finishes its queue and is joined
    (a write already running or queued completes, as a thread pool's workers do)."""
    global _exiting  # noqa: PLW0603 - one flag for the whole process, read by every _put
    _exiting = True
    ending = [connection.stop() for connection in list(_LIVE)]
    for thread in ending:
        if thread is not None:
            thread.join()


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    """A connection thread's loop: each job in turn until ``None``."""
    while (job := jobs.get()) is not None:
        _run(*job)
        del job  # hold nothing (a store's bound method) while waiting: its finalizer stops us


def _run(
    function: Callable[..., object],
    args: tuple[object, ...],
    future: asyncio.Future[Any] | None,
    loop: asyncio.AbstractEventLoop | None,
) -> None:
    """One job; what it raises is its caller's (or dropped), never the thread's end."""
    if future is not None and future.cancelled():  # the caller went before it ran
        return
    try:
        result, error = function(*args), None
    except BaseException as raised:  # as a thread pool's worker does: the job's, not the thread's
        result, error = None, raised
    if future is not None and loop is not None:
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nobody waiting
            loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(
    future: asyncio.Future[Any],
    result: object,
    error: BaseException | None,
    what: str = "the call",
) -> None:
    """Set an outcome on its loop, unless its caller was cancelled meanwhile. ``what`` names
    what raised, should it be a ``StopIteration`` (which no future can hold)."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, StopIteration):  # a future cannot hold one: never hang on it
        wrapped = RuntimeError(f"{what} raised StopIteration")
        wrapped.__cause__ = error
        future.set_exception(wrapped)
    else:
        future.set_exception(error)


class _Queued(Generic[In, Out]):
    """A queued call: ``future`` is its outcome as the writer sets it (what cancelling it
    while still queued drops); ``waiter``, for a caller on an asyncio loop, the same outcome on
    that loop, set there with every other waiter of the group in one wake-up of the loop."""

    __slots__ = ("future", "item", "size", "waiter")

    def __init__(self, item: In, size: int) -> None:
        self.item = item
        self.size = size
        self.future: concurrent.futures.Future[Out] = concurrent.futures.Future()
        self.waiter: asyncio.Future[Out] | None = None


def _answer(group: list[_Queued[Any, Any]]) -> None:
    """Copy each written call's outcome to its asyncio waiter (on the waiters' loop)."""
    for queued in group:
        waiter = queued.waiter
        if waiter is None or not queued.future.done():
            continue  # outside asyncio, or (never, but never block) not written yet
        error = queued.future.exception()
        result = None if error is not None else queued.future.result()
        _settle(waiter, result, error, "the group write")


def _one(item: object) -> int:
    return 1


class GroupCommit(Generic[In, Out]):
    """Items queued by many callers and written by the writer thread in groups.

    Args:
        thread: the writer connection's thread.
        write: writes a group's items in one transaction and returns each item's result, in
            order; it takes the connection's lock itself.
        max_size: most units per transaction (a larger single item still goes alone).
        size: an item's units (an audit append: its events); 1 each by default.
    """

    def __init__(
        self,
        thread: ConnectionThread,
        write: Callable[[list[In]], list[Out]],
        max_size: int = _MAX_GROUP_SIZE,
        size: Callable[[In], int] = _one,
    ) -> None:
        self._thread = thread
        self._write = write
        self.max_size = max_size
        self._size = size
        self._queue: deque[_Queued[In, Out]] = deque()
        self._draining = threading.Lock()  # one drainer at a time, whichever thread it is on
        # A drain is queued on the writer thread that has not started emptying the queue yet:
        # it will take whatever is queued meanwhile, so a call queued now need not wake the
        # thread again (each wake costs a thread hand-off; under load most found nothing left).
        self._scheduled = False
        _QUEUES.add(self)  # a forked child empties its queue (see _after_fork)

    async def submit(self, item: In) -> Out:
        """Queue ``item`` as one atomic call; return its result once it is durable."""
        queued: _Queued[In, Out] = _Queued(item, self._size(item))
        try:
            waiter: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        except RuntimeError:  # not asyncio: drain on anyio's threads (another may hold ours)
            self._queue.append(queued)
            return await self._drain_in_worker(queued)
        queued.waiter = waiter
        self._queue.append(queued)
        # Unless the drain already queued takes this item too, wake the writer thread; at
        # interpreter exit (no new jobs) drain on anyio's threads instead.
        if not self._scheduled and not self._schedule_drain():
            queued.waiter = None  # answered through its future, as outside asyncio
            return await self._drain_in_worker(queued)
        try:
            return await waiter
        except asyncio.CancelledError:
            queued.future.cancel()  # still queued: dropped unwritten; else it runs to its end
            raise

    async def _drain_in_worker(self, queued: _Queued[In, Out]) -> Out:
        try:
            return await anyio.to_thread.run_sync(self._drain_and_wait, queued)
        except BaseException:
            # Cancelled before the worker ran (trio delivers a pending cancel at this await):
            # a call still queued is never written; one already written stays as it is.
            queued.future.cancel()
            raise

    def drain(self) -> None:
        """Write what is queued, group by group (the writer thread; anyio's outside asyncio)."""
        with self._draining:
            # Cleared before the queue is read: a call queued from here on schedules a drain
            # of its own (at worst one that finds nothing), one queued before is taken below.
            self._scheduled = False
            try:
                while self._queue:
                    group = self._take()
                    if group:
                        self._commit(group)
            except BaseException:  # never leave a call queued with no drain to come
                if self._queue and not self._scheduled:
                    self._schedule_drain()  # at exit: the next call drains on anyio's threads
                raise

    def _schedule_drain(self) -> bool:
        """Queue a drain on the writer thread; ``False`` when it takes no new jobs (exit)."""
        self._scheduled = True
        try:
            self._thread.submit(self.drain)
        except RuntimeError:
            self._scheduled = False
            return False
        return True

    def _drain_and_wait(self, queued: _Queued[In, Out]) -> Out:
        self.drain()
        return queued.future.result()

    def _take(self) -> list[_Queued[In, Out]]:
        group: list[_Queued[In, Out]] = []
        size = 0
        while self._queue:
            queued = self._queue[0]
            if group and size + queued.size > self.max_size:
                break
            self._queue.popleft()
            if not queued.future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            group.append(queued)
            size += queued.size
        return group

    def _commit(self, group: list[_Queued[In, Out]]) -> None:
        try:
            results = self._write([queued.item for queued in group])
            if len(results) != len(group):  # a bug in ``write``: its transaction may stand
                raise RuntimeError("a group write returned a result count unlike its calls")
        except BaseException as error:  # the transaction rolled back: nothing of it stored
            for queued in group:
                queued.future.set_exception(error)
            _wake(group)
            if not isinstance(error, Exception):
                raise
            return
        for queued, result in zip(group, results, strict=True):
            queued.future.set_result(result)
        _wake(group)


def _wake(group: list[_Queued[Any, Any]]) -> None:
    """Answer the group's asyncio callers: one hand-off to each loop they wait on."""
    loops: dict[asyncio.AbstractEventLoop, list[_Queued[Any, Any]]] = {}
    for queued in group:
        if queued.waiter is not None:
            loops.setdefault(queued.waiter.get_loop(), []).append(queued)
    for loop, waiting in loops.items():
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nobody waiting
            loop.call_soon_threadsafe(_answer, waiting)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork)
