"""A SQLite connection thread held busy on purpose, so what queues behind it is known exactly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from agentguard.storage._sqlite._threads import ConnectionThread

DEADLINE = 10.0


@contextmanager
def held(thread: ConnectionThread) -> Iterator[threading.Event]:
    """``thread`` busy until the yielded event is set (or the block ends)."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(DEADLINE)

    thread.submit(hold)
    assert started.wait(DEADLINE), "the connection thread never started the holding job"
    try:
        yield release
    finally:
        release.set()
