from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from agentguard.audit import Action, AuditEvent, AuditWriter
from agentguard.errors import AuditUnavailable
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio


def event(clock: FakeClock) -> AuditEvent:
    return AuditEvent(action=Action.KEY_ISSUE, ts=clock.now())


async def test_writer_stamps_instance_and_returns_entry() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    entry = await AuditWriter(store, instance="api-1").record(event(clock))
    assert entry is not None
    assert entry.seq == 0
    assert entry.event()["instance"] == "api-1"


async def test_store_error_becomes_503_without_its_message() -> None:
    class Broken:
        async def append(self, events: Sequence[AuditEvent]) -> Any:
            raise RuntimeError("connection to db at password=hunter2 failed")

    with pytest.raises(AuditUnavailable) as info:
        await AuditWriter(Broken()).record(event(FakeClock()))  # type: ignore[arg-type]
    assert "hunter2" not in str(info.value)


async def test_optional_timeout_fails_closed() -> None:
    class Hanging:
        async def append(self, events: Sequence[AuditEvent]) -> Any:
            await anyio.sleep(10)

    with pytest.raises(AuditUnavailable):
        await AuditWriter(Hanging(), timeout=0.01).record(event(FakeClock()))  # type: ignore[arg-type]
