"""The SQLite revocation feed's connection is never closed under a running read.

The feed reads ``PRAGMA data_version`` in a worker thread. A task cancelled natively
(``task.cancel()``, as ``asyncio.run`` does at its end) leaves that thread reading while its
``finally`` closes the connection from another thread; closing a connection under a running
statement crashed the process inside SQLite (a segfault in CI). These tests hold a read open,
cancel the task, and check the close comes only after the read.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agentguard.storage._revocation_feeds._local import DataVersionFeed, _Versions


class _Gated:
    """A real connection whose second ``execute`` waits on ``gate``; it records the order."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.events: list[str] = []

    def execute(self, sql: str) -> sqlite3.Cursor:
        self.calls += 1
        if self.calls == 2:
            self.entered.set()
            self.gate.wait(10)
            self.events.append("read returned")
        return self.real.execute(sql)

    def close(self) -> None:
        self.events.append("closed")
        self.real.close()


def _database(tmp_path: Path) -> str:
    path = str(tmp_path / "feed.db")
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    return path


def test_a_native_cancel_during_a_read_closes_the_connection_only_after_it(
    tmp_path: Path,
) -> None:
    path = _database(tmp_path)
    feed = DataVersionFeed(path, period=0.01)
    gated = _Gated(sqlite3.connect(path, check_same_thread=False))

    def gated_open() -> _Versions:
        return _Versions(gated)  # type: ignore[arg-type]

    feed._open = gated_open  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(feed.watch(lambda change: None, lambda: None))
        deadline = time.monotonic() + 10
        while not gated.entered.is_set():
            assert time.monotonic() < deadline, "the feed never read a second time"
            await asyncio.sleep(0.005)
        task.cancel()
        # Give a task that closes without waiting for the read every chance to end now.
        await asyncio.wait({task}, timeout=0.5)
        gated.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert gated.events == ["read returned", "closed"]


def test_a_read_after_the_close_is_an_error_not_a_crash(tmp_path: Path) -> None:
    versions = _Versions(sqlite3.connect(_database(tmp_path), check_same_thread=False))
    assert versions.read() >= 0
    versions.close()
    with pytest.raises(sqlite3.ProgrammingError):
        versions.read()


_CLOSE_UNDER_READS = textwrap.dedent(
    """
    import random, sqlite3, sys, threading, time
    from agentguard.storage._revocation_feeds._local import _Versions

    path, rounds = sys.argv[1], int(sys.argv[2])
    refused = 0
    for _ in range(rounds):
        versions = _Versions(sqlite3.connect(path, isolation_level=None, check_same_thread=False))
        reading = threading.Event()

        def reader():
            global refused
            reading.set()
            while True:
                try:
                    versions.read()
                except sqlite3.ProgrammingError:  # closed: the only way a read may end
                    refused += 1
                    return

        thread = threading.Thread(target=reader)
        thread.start()
        reading.wait()
        time.sleep(random.random() * 0.0005)
        versions.close()
        thread.join()
    print(refused)
    """
)


def test_closing_while_another_thread_reads_in_a_loop_never_crashes(tmp_path: Path) -> None:
    # A bare sqlite3 connection closed under a reading thread this way dies with SIGSEGV within
    # the first few rounds on CPython 3.11; run in a child so a crash fails this test only.
    rounds = 300
    child = subprocess.run(
        [sys.executable, "-c", _CLOSE_UNDER_READS, _database(tmp_path), str(rounds)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == [str(rounds)]
