"""SQLiteStore passes every storage contract, on a file and in memory.

On a file, a second ``SQLiteStore`` over the same file is ``other_store``: two instances with
their own connections and locks, as two processes on one database. ``:memory:`` cannot be
shared, so the in-memory store runs the single-instance contracts only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    ApprovalContract,
    AuditStoreContract,
    ConnectionContract,
    CredentialLivenessContract,
    CredentialStoreContract,
    DirectoryStoreContract,
    FailureContract,
    KeyStoreContract,
    LimitContract,
    LivenessContract,
    MultiInstanceContract,
    OperatorContract,
    OtherLoopContract,
    ReplayCacheContract,
    StatefulContract,
)


async def break_sqlite(store: SQLiteStore) -> None:
    """Close the store's connection behind its back: every later statement fails in sqlite3."""
    connection = store._connection
    assert connection is not None, "the store has not opened its database yet"
    connection.close()


class TestSQLiteStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
    LivenessContract,
    CredentialLivenessContract,
    MultiInstanceContract,
    StatefulContract,
    FailureContract,
    OtherLoopContract,
    ApprovalContract,
    OperatorContract,
    LimitContract,
    ConnectionContract,
):
    store_type = SQLiteStore
    loop_bound = False  # worker threads under one lock: any loop, several at once

    async def break_store(self, store: SQLiteStore) -> None:
        await break_sqlite(store)

    @pytest.fixture
    async def store(self, clock: FakeClock, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(tmp_path / "agentguard.db", clock=clock) as store:
            yield store

    @pytest.fixture
    async def other_store(
        self, store: SQLiteStore, clock: FakeClock, tmp_path: Path
    ) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(tmp_path / "agentguard.db", clock=clock) as other:
            yield other


class TestSQLiteMemoryStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
    FailureContract,
    OtherLoopContract,
):
    store_type = SQLiteStore
    loop_bound = False  # worker threads under one lock: any loop, several at once

    async def break_store(self, store: SQLiteStore) -> None:
        await break_sqlite(store)

    @pytest.fixture
    async def store(self, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
        async with SQLiteStore(":memory:", clock=clock) as store:
            yield store
