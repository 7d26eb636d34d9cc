"""PostgresStore passes every storage contract, each test in a schema of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard.storage.postgres import PostgresStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    AuditStoreContract,
    CredentialStoreContract,
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
)
from tests.backends.services import temporary_schema


class TestPostgresStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
):
    @pytest.fixture
    async def store(self, clock: FakeClock) -> AsyncIterator[PostgresStore]:
        async with (
            temporary_schema() as (dsn, schema),
            PostgresStore(dsn, clock=clock, schema=schema) as store,
        ):
            yield store
