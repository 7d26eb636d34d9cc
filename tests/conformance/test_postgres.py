"""PostgresStore passes every storage contract, each test in a schema of its own.

``other_store`` is a second ``PostgresStore`` (its own pool, as another app instance has) on
the same schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard.storage import PostgresStore
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
from tests.backends.services import temporary_schema


class TestPostgresStore(
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
    store_type = PostgresStore
    loop_bound = True  # asyncpg pools belong to one loop: one store per loop

    async def break_store(self, store: PostgresStore) -> None:
        """Close the store's pool behind its back: asyncpg then refuses every acquire."""
        await store._pool.close()

    @pytest.fixture
    async def location(self) -> AsyncIterator[tuple[str, str]]:
        """``(dsn, schema)``: a fresh schema, dropped after the test."""
        async with temporary_schema() as location:
            yield location

    @pytest.fixture
    async def store(
        self, location: tuple[str, str], clock: FakeClock
    ) -> AsyncIterator[PostgresStore]:
        dsn, schema = location
        async with PostgresStore(dsn, clock=clock, schema=schema) as store:
            yield store

    @pytest.fixture
    async def other_store(
        self, store: PostgresStore, location: tuple[str, str], clock: FakeClock
    ) -> AsyncIterator[PostgresStore]:
        dsn, schema = location
        async with PostgresStore(dsn, clock=clock, schema=schema) as other:
            yield other
