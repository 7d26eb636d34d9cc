"""AuditStoreContract: linear, contiguous, hash-chained appends under concurrency."""

from __future__ import annotations

from typing import Any

import anyio

from agentguard.audit.chain import verify_chain
from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.testing.conformance._base import ContractBase
from agentguard.testing.fakes import FakeClock

__all__ = ["AuditStoreContract"]


def _event(clock: FakeClock, n: int) -> AuditEvent:
    return AuditEvent(
        action=Action.DECISION,
        ts=clock.now(),
        decision=Decision.ALLOW,
        method="GET",
        path=f"/crm/{n}",
        service="crm",
        user_id="u1",
    )


class AuditStoreContract(ContractBase):
    """Subclass with a ``store`` fixture returning a fresh store with an empty log."""

    async def test_empty_log(self, store: Any) -> None:
        assert await store.head() is None
        assert await store.read() == []

    async def test_append_is_contiguous_and_chained(self, store: Any, clock: FakeClock) -> None:
        first = await store.append([_event(clock, 0)])
        batch = await store.append([_event(clock, n) for n in range(1, 5)])
        assert [e.seq for e in first + batch] == [0, 1, 2, 3, 4]
        entries = await store.read()
        assert entries == first + batch
        assert verify_chain(entries) is None
        assert await store.head() == batch[-1]

    async def test_range_reads(self, store: Any, clock: FakeClock) -> None:
        await store.append([_event(clock, n) for n in range(10)])
        assert [e.seq for e in await store.read(3, 6)] == [3, 4, 5]
        assert [e.seq for e in await store.read(8)] == [8, 9]
        assert await store.read(10) == []
        assert await store.read(5, 5) == []
        assert await store.read(6, 2) == []

    async def test_concurrent_appends_form_one_chain(self, store: Any, clock: FakeClock) -> None:
        async def writer(n: int) -> None:
            for i in range(5):
                await store.append([_event(clock, n * 100 + i)])

        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(writer, n)
        entries = await store.read()
        assert [e.seq for e in entries] == list(range(50))
        assert verify_chain(entries) is None
        paths = sorted(str(e.event()["path"]) for e in entries)
        assert paths == sorted(f"/crm/{n * 100 + i}" for n in range(10) for i in range(5))
