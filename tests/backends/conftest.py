"""Fixtures for tests against real servers: a fresh schema per test, stores built on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard.storage import PostgresStore
from agentguard.testing import FakeClock
from tests.backends.services import temporary_schema


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pg_schema() -> AsyncIterator[tuple[str, str]]:
    """``(dsn, schema)``: a random schema that is dropped after the test."""
    async with temporary_schema() as location:
        yield location


@pytest.fixture
async def two_stores(
    pg_schema: tuple[str, str], clock: FakeClock
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two independent stores (two pools, as two app instances would have) on one schema."""
    dsn, schema = pg_schema
    async with (
        PostgresStore(dsn, clock=clock, schema=schema) as first,
        PostgresStore(dsn, clock=clock, schema=schema) as second,
    ):
        yield first, second
