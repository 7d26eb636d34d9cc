"""MemoryStore passes every storage contract."""

from __future__ import annotations

import pytest

from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    AuditStoreContract,
    CredentialStoreContract,
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
)


class TestMemoryStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
):
    @pytest.fixture
    def store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock)
