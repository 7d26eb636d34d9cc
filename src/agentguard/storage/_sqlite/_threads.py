"""Where a SQLiteStore's SQL runs: one thread per connection, and audit appends committed in groups.

A store's connection has one thread of its own that runs its calls in order (a
``ThreadPoolExecutor`` of one): handing work to it from an asyncio loop costs about a third of what
``anyio.to_thread`` costs, and one thread per connection means its lock is never contended on the
hot path. Outside asyncio (trio, through anyio) calls go through ``anyio.to_thread`` and the
connection's lock as before; both ways take the same lock, so they mix safely.

:class:`GroupCommit` is the audit append queue: each call queues its events and wakes the writer
thread, which writes everything queued so far in one transaction (one fsync) and then answers every
caller in it. One call's events are never split, a call cancelled while still queued is dropped
unwritten, and if the transaction fails every caller in it gets the error and nothing of it is
stored: the same contract as PostgreSQL's ``AuditBatcher``.

A cancelled call either never ran (it was still queued) or runs to its end in its thread; the
caller does not wait for that end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio.to_thread

from agentguard.audit._chain import AuditEntry
from agentguard.audit._events import AuditEvent

__all__ = ["ConnectionThread", "GroupCommit"]

T = TypeVar("T")
Write = Callable[[list[list[AuditEvent]]], list[list[AuditEntry]]]
"""Writes the queued calls' events in one transaction; each call's entries, in order."""

_MAX_GROUP_EVENTS = 256


_LIVE: weakref.WeakSet[ConnectionThread] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child the threads are gone (and a lock may be held by one of them): start
    afresh on first use."""
    for thread in list(_LIVE):
        thread.lock = threading.Lock()
        thread._create = threading.Lock()
        thread._executor = None


class ConnectionThread:
    """One thread that runs every call of one connection, in order.

    ``lock`` guards the connection (whoever runs SQL on it holds it); the thread is started
    on first use and stopped by :meth:`stop` or when ``owner`` is collected.
    """

    def __init__(self, name: str, owner: object) -> None:
        self.lock = threading.Lock()
        self._name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._owner = weakref.ref(owner)
        self._create = threading.Lock()
        _LIVE.add(self)

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The connection's thread (started on first use)."""
        executor = self._executor
        if executor is None:
            with self._create:
                executor = self._executor
                if executor is None:
                    executor = concurrent.futures.ThreadPoolExecutor(1, self._name)
                    owner = self._owner()
                    if owner is not None:  # a store nobody closed still stops its thread
                        weakref.finalize(owner, executor.shutdown, wait=False)
                    self._executor = executor
        return executor

    async def call(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the connection's thread (asyncio), else on anyio's threads."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio (or another anyio backend): its own worker threads
            return await anyio.to_thread.run_sync(function, *args)
        try:
            future = loop.run_in_executor(self.executor(), function, *args)
        except RuntimeError:  # at interpreter exit (atexit hooks closing stores): no new threads
            return await anyio.to_thread.run_sync(function, *args)
        return await future

    def stop(self) -> None:
        """Let queued calls finish, then stop the thread (it is started again if called)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


class _Queued:
    __slots__ = ("events", "future")

    def __init__(self, events: list[AuditEvent]) -> None:
        self.events = events
        self.future: concurrent.futures.Future[list[AuditEntry]] = concurrent.futures.Future()


class GroupCommit:
    """Audit appends queued by many callers and written by the writer thread in groups.

    Args:
        thread: the writer connection's thread.
        write: writes a group in one transaction (see :data:`Write`); it takes the connection's
            lock itself.
        max_events: most events per transaction (a larger single call still goes alone).
    """

    def __init__(
        self, thread: ConnectionThread, write: Write, max_events: int = _MAX_GROUP_EVENTS
    ) -> None:
        self._thread = thread
        self._write = write
        self.max_events = max_events
        self._queue: deque[_Queued] = deque()
        self._draining = threading.Lock()  # one drainer at a time, whichever thread it is on

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Queue ``events`` as one atomic call; return their entries once they are durable."""
        queued = _Queued(list(events))
        self._queue.append(queued)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: drain on anyio's threads (another may hold ours)
            return await anyio.to_thread.run_sync(self._drain_and_wait, queued)
        try:
            self._thread.executor().submit(self.drain)
        except RuntimeError:  # at interpreter exit: drain on anyio's threads instead
            return await anyio.to_thread.run_sync(self._drain_and_wait, queued)
        return await asyncio.wrap_future(queued.future)

    def drain(self) -> None:
        """Write what is queued, group by group (the writer thread; anyio's outside asyncio)."""
        with self._draining:
            while self._queue:
                group = self._take()
                if group:
                    self._commit(group)

    def _drain_and_wait(self, queued: _Queued) -> list[AuditEntry]:
        self.drain()
        return queued.future.result()

    def _take(self) -> list[_Queued]:
        group: list[_Queued] = []
        size = 0
        while self._queue:
            queued = self._queue[0]
            if group and size + len(queued.events) > self.max_events:
                break
            self._queue.popleft()
            if not queued.future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            group.append(queued)
            size += len(queued.events)
        return group

    def _commit(self, group: list[_Queued]) -> None:
        try:
            results = self._write([queued.events for queued in group])
        except BaseException as error:  # the transaction rolled back: nothing of it stored
            for queued in group:
                queued.future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for queued, entries in zip(group, results, strict=True):
            queued.future.set_result(entries)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork)
