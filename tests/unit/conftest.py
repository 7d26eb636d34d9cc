"""Fixtures most unit tests share: a fake clock and an in-memory store on it."""

from __future__ import annotations

import pytest

from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)
