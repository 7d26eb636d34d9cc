"""Fixtures of the gate tests: a FakeClock, a world on a MemoryStore, and two instances.

``instances`` builds two guards on two store instances over one database, as two gateway
processes would have them: two MemoryStores over one backing, two SQLiteStores over one file,
or two PostgresStores (two pools) over one fresh schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore
from agentguard.testing import FakeClock
from tests.backends.services import temporary_schema
from tests.gates.support import World, build_world, crm_rules, make_guard

BACKENDS = ("memory", "sqlite", "postgres")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def world(clock: FakeClock) -> World:
    """Alice (two key families), Bob (her grants), a reader, behind one guard and app."""
    return await build_world(MemoryStore(clock=clock), clock)


class Instances:
    """Two store instances over one database; :meth:`worlds` puts a guard on each."""

    def __init__(self, first: Any, second: Any, clock: FakeClock) -> None:
        self.stores = (first, second)
        self.clock = clock

    async def worlds(self, rules: Any = None, **options: Any) -> tuple[World, World]:
        """Two worlds, one per instance, with the same parties and the same rules."""
        rules = rules or crm_rules()
        first = await build_world(self.stores[0], self.clock, rules, **options)
        second = World(
            self.clock, self.stores[1], make_guard(self.stores[1], self.clock, rules, **options),
            first.recorder, first.alice, first.alice2, first.bob, first.reader,
        )  # fmt: skip
        return first, second


@pytest.fixture(params=BACKENDS)
async def instances(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Instances]:
    if request.param == "memory":
        store = MemoryStore(clock=clock)
        yield Instances(store, store.another_instance(), clock)
    elif request.param == "sqlite":
        path = tmp_path / "gates.db"
        async with (
            SQLiteStore(path, clock=clock) as first,
            SQLiteStore(path, clock=clock) as second,
        ):
            yield Instances(first, second, clock)
    else:
        async with (
            temporary_schema() as (dsn, schema),
            PostgresStore(dsn, clock=clock, schema=schema) as first,
            PostgresStore(dsn, clock=clock, schema=schema) as second,
        ):
            yield Instances(first, second, clock)
