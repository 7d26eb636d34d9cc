"""Closing ``audit verify``'s worker prefetch never holds up the event loop it runs on.

``Prefetch.aclose`` waits for the pages still in flight (the pool's shutdown) on a thread: a
library caller verifying inside a server's loop keeps serving meanwhile. The pool here is a
stand-in whose shutdown blocks until the loop has shown it is still running (or a deadline).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import anyio
import pytest

from agentguard.audit._verify_store import PageLeaves, Prefetch

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


class BlockingPool:
    """A pool whose shutdown waits (as for pages in flight) until ``released`` is set."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.shutdown_calls: list[tuple[bool, bool]] = []
        self.shutting_down = threading.Event()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shutdown_calls.append((wait, cancel_futures))
        self.shutting_down.set()
        self.released.wait(DEADLINE)


def blocked_prefetch(pool: BlockingPool) -> Prefetch:
    prefetch = object.__new__(Prefetch)  # no real workers: only close is under test
    prefetch._pool = pool  # type: ignore[assignment]
    prefetch._futures = {0: Future[PageLeaves]()}
    return prefetch


async def test_closing_waits_for_the_workers_on_a_thread_not_on_the_loop() -> None:
    pool = BlockingPool()
    prefetch = blocked_prefetch(pool)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        await anyio.to_thread.run_sync(pool.shutting_down.wait, DEADLINE)
        for _ in range(3):  # the loop runs while the shutdown is still waiting
            await anyio.sleep(0.01)
            ticks += 1
        pool.released.set()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(heartbeat)
            await prefetch.aclose()
    assert ticks == 3
    assert pool.shutdown_calls == [(True, True)]  # waited for, and nothing queued left to run
    assert prefetch._futures == {}


async def test_async_with_closes_the_prefetch() -> None:
    pool = BlockingPool()
    pool.released.set()
    async with blocked_prefetch(pool) as prefetch:
        assert prefetch._futures
    assert pool.shutdown_calls == [(True, True)]
    assert prefetch._futures == {}
