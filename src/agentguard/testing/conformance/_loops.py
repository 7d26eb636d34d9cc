"""OtherLoopContract: using the store from another thread's event loop, as WSGI apps do.

Under the WSGI adapter the guard runs on one background event loop
(:class:`~agentguard.wsgi.EventLoopPortal`), while the app's own code, a test, or an admin task
may run on another loop. Whether one store may serve several loops is the backend's to say, and
part of its contract. Declare it with the class attribute :attr:`OtherLoopContract.loop_bound`:

- ``loop_bound = False``: one store serves any number of event loops, at once (``MemoryStore``
  and ``SQLiteStore``: thread locks, work in worker threads). The contract uses the store from
  its own loop and from an :class:`~agentguard.wsgi.EventLoopPortal` thread concurrently:
  every method works there, each loop sees the other's writes, and the one-winner guarantees
  (rotation, replay, the audit chain) hold across the two loops.
- ``loop_bound = True``: the store belongs to the loop that first uses it and you create one
  store (one pool) per loop (``PostgresStore``, ``RedisReplayCache``: asyncpg and redis-py
  connections are bound to a loop). The contract uses the store on its own loop, then calls
  every method from the portal's loop and expects each to raise
  :class:`~agentguard.storage.StorageError` at once (never a hang, an answer, or a driver's
  "attached to a different loop" ``RuntimeError``), and the store to go on working on its own
  loop.

An undeclared ``loop_bound`` fails the test, saying so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.to_thread
import pytest

from agentguard._model import KeyKind
from agentguard.audit._chain import verify_chain
from agentguard.storage._protocols import AuditStore, DirectoryStore, KeyStore, ReplayCache
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._audit import audit_event
from agentguard.testing.conformance._base import ContractBase, key_record, missing_fixture
from agentguard.testing.conformance._failure import (
    failure_calls,
    fill_store,
    outcome,
    unmapped,
)
from agentguard.wsgi._portal import EventLoopPortal

__all__ = ["OtherLoopContract"]

T = TypeVar("T")

LOOPS_DEADLINE = 60.0
"""Seconds the cross-loop contention may take before the contract fails as a deadlock."""

LOOP_BOUND_UNDECLARED = (
    "declare `loop_bound` on your test class to run OtherLoopContract: False if one store may "
    "be used from several event loops at once, True if it needs one store (pool) per loop and "
    "refuses calls from another loop with StorageError"
)


async def on_other_loop(portal: EventLoopPortal, func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on ``portal``'s loop from a worker thread, as a WSGI request thread does.

    The calling loop stays free meanwhile, so work on both loops can overlap.
    """

    async def run() -> T:
        return await func()

    # abandon_on_cancel: a deadline on the caller must end the test even when the other loop's
    # call never returns (a store that serialises with a lock bound to one loop deadlocks here).
    return await anyio.to_thread.run_sync(partial(portal.call, run), abandon_on_cancel=True)


class OtherLoopContract(ContractBase):
    """Subclass with a ``store`` fixture and set :attr:`loop_bound` (see the module doc)."""

    loops_deadline: ClassVar[float] = LOOPS_DEADLINE
    """Seconds the cross-loop contention may take before it fails as a deadlock."""

    loop_bound: ClassVar[bool | None] = None
    """Whether the store needs one instance per event loop. Declare it: ``None`` fails."""

    @pytest.fixture
    def other_loop(self, anyio_backend: Any) -> Iterator[EventLoopPortal]:
        """A second event loop in a thread of its own, the WSGI adapter's portal."""
        backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
        portal = EventLoopPortal(backend)
        try:
            yield portal
        finally:
            portal.close()

    def _declared(self, bound: bool) -> None:
        if self.loop_bound is None:
            missing_fixture(LOOP_BOUND_UNDECLARED)
        if self.loop_bound is not bound:
            pytest.skip(f"the store declares loop_bound = {self.loop_bound}")

    # loop_bound = False: one store, several loops at once.

    async def test_every_method_works_from_another_loop(
        self, store: object, clock: FakeClock, other_loop: EventLoopPortal
    ) -> None:
        self._declared(False)
        filled = await fill_store(store, clock)
        calls = failure_calls(store, clock, filled)
        for call in calls:
            await on_other_loop(other_loop, call.call)  # raises if the call fails there
        if isinstance(store, DirectoryStore):
            assert await store.get_account("a2") is not None  # written on the other loop
        if isinstance(store, AuditStore):
            head = await store.head()
            assert head is not None and head.seq == 1
            assert await on_other_loop(other_loop, store.head) == head

    async def test_guarantees_hold_across_loops(
        self, store: object, clock: FakeClock, other_loop: EventLoopPortal
    ) -> None:
        """Rotation and replay keep one winner, the audit chain stays linear, across loops."""
        self._declared(False)
        wins: list[bool] = []
        until = clock.now() + timedelta(minutes=5)
        refresh = key_record(clock, kind=KeyKind.REFRESH)
        if isinstance(store, KeyStore):
            await fill_store(store, clock)
            await store.insert_keys([refresh])

        async def contend(n: int, here: bool) -> None:
            async def work() -> None:
                if isinstance(store, KeyStore):
                    successor = [key_record(clock, family_id=refresh.family_id)]
                    wins.append(await store.rotate(refresh.id, successor, now=clock.now()))
                if isinstance(store, ReplayCache):
                    wins.append(await store.check_and_store(b"across-loops", until))
                if isinstance(store, AuditStore):
                    await store.append([audit_event(clock, 100 + n)])

            await (work() if here else on_other_loop(other_loop, work))

        with anyio.fail_after(self.loops_deadline):  # a deadlock fails, never hangs the suite
            async with anyio.create_task_group() as group:
                for n in range(16):
                    group.start_soon(contend, n, n % 2 == 0)
        kinds = sum(isinstance(store, p) for p in (KeyStore, ReplayCache))
        assert wins.count(True) == kinds, f"{wins.count(True)} winners for {kinds} one-time uses"
        if isinstance(store, AuditStore):
            entries = await store.read()
            assert verify_chain(entries) is None
            appended = [e for e in entries if str(e.event()["path"]).startswith("/crm/1")]
            assert len(appended) == 16 and [e.seq for e in entries] == list(range(len(entries)))

    # loop_bound = True: one store per loop; another loop is refused.

    async def test_a_call_from_another_loop_raises_storage_error(
        self, store: object, clock: FakeClock, other_loop: EventLoopPortal
    ) -> None:
        self._declared(True)
        filled = await fill_store(store, clock)  # binds the store to this loop
        calls = failure_calls(store, clock, filled)
        problems = []
        for call in calls:
            result = await on_other_loop(other_loop, partial(outcome, call))
            problem = unmapped(call, result)
            if problem is not None:
                problems.append(problem)
        assert not problems, (
            "calls from another event loop on a loop-bound store must raise StorageError:\n  "
            + "\n  ".join(problems)
        )
        again = await fill_store(store, clock)  # and it still works on its own loop
        for call in failure_calls(store, clock, again):
            await call.call()
