"""SQLiteStore passes every storage contract, on a file and in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentguard.storage.sqlite import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    AuditStoreContract,
    CredentialStoreContract,
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
)


class TestSQLiteStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
):
    @pytest.fixture
    async def store(self, clock: FakeClock, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(tmp_path / "agentguard.db", clock=clock) as store:
            yield store


class TestSQLiteMemoryStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
):
    @pytest.fixture
    async def store(self, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(":memory:", clock=clock) as store:
            yield store
