"""Feeds for stores in this process or on this machine: polling, and SQLite's data_version.

- :class:`PollFeed` says "something may have changed" every ``period`` seconds: for the
  in-memory store, whose look-ups cost microseconds, so re-checking every open stream a few
  times a second is cheaper than any machinery.
- :class:`DataVersionFeed` reads ``PRAGMA data_version`` on a connection of its own: SQLite
  changes that number whenever another connection (any process's) commits to the file, and
  reading it touches no table. Any commit counts (an audit append too), so under traffic the
  open streams are re-checked about every ``period``: one indexed look-up per distinct key,
  the cost of one request per stream key and period.

The feed's connection is read and closed under one lock. The read runs in a worker thread, and
when the watching task is cancelled natively (``task.cancel()``, as ``asyncio.run`` does to the
tasks left at its end) the thread's read goes on while the ``finally`` closes the connection
from another thread: closing a connection under a running statement frees what the statement
uses, and the reading thread dies with a segfault inside SQLite. With the lock the close waits
for the read, and a read after the close raises ``sqlite3.ProgrammingError``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread

from agentguard.storage._revocation_feeds._changes import EVERYTHING, Change

__all__ = ["DataVersionFeed", "PollFeed"]


class PollFeed:
    """``changed(everything)`` every ``period`` seconds (stores whose reads are nearly free)."""

    def __init__(self, period: float = 0.25) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period

    def __repr__(self) -> str:
        return f"PollFeed(period={self.period})"

    async def watch(self, changed: Callable[[Change], None], ready: Callable[[], None]) -> None:
        ready()
        while True:
            await anyio.sleep(self.period)
            changed(EVERYTHING)


class DataVersionFeed:
    """Watches a SQLite file for commits by other connections (processes) every ``period``."""

    def __init__(self, path: str, *, period: float = 0.2, timeout: float = 5.0) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.path = path
        self.period = period
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"DataVersionFeed({self.path!r}, period={self.period})"

    def _open(self) -> _Versions:
        # mode=rw: never create the file (the store creates it, with its own permissions).
        uri = Path(self.path).resolve().as_uri() + "?mode=rw"
        connection = sqlite3.connect(
            uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        return _Versions(connection)

    async def watch(self, changed: Callable[[Change], None], ready: Callable[[], None]) -> None:
        versions = await anyio.to_thread.run_sync(self._open)
        try:
            last = await anyio.to_thread.run_sync(versions.read)
            ready()
            while True:
                await anyio.sleep(self.period)
                version = await anyio.to_thread.run_sync(versions.read)
                if version != last:
                    last = version
                    changed(EVERYTHING)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(versions.close)


class _Versions:
    """The feed's connection: one statement at a time, and never closed under a running one."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def read(self) -> int:
        with self._lock:
            row = self._connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._connection.close()
