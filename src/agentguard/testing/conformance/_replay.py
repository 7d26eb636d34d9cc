"""ReplayCacheContract: atomic one-time use with expiry by the store's clock."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import anyio

from agentguard.storage._protocols import ReplayCache
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["ReplayCacheContract"]


class ReplayCacheContract(ContractBase):
    """Subclass with a ``store`` fixture whose replay cache runs on ``clock``."""

    store_type: ClassVar[type[ReplayCache]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``ReplayCache``."""

    async def test_store_implements_replay_cache(self, store: ReplayCache) -> None:
        assert_store_type(self, store, ReplayCache)

    async def test_first_use_wins_second_loses(self, store: ReplayCache, clock: FakeClock) -> None:
        until = clock.now() + timedelta(seconds=60)
        assert await store.check_and_store(b"jti-1", until) is True
        assert await store.check_and_store(b"jti-1", until) is False
        assert await store.check_and_store(b"jti-2", until) is True

    async def test_entry_lives_until_its_expiry(self, store: ReplayCache, clock: FakeClock) -> None:
        until = clock.now() + timedelta(seconds=60)
        assert await store.check_and_store(b"k", until) is True
        clock.advance(59)
        assert await store.check_and_store(b"k", until) is False
        clock.advance(2)
        assert await store.check_and_store(b"k", clock.now() + timedelta(seconds=60)) is True

    async def test_concurrent_use_has_one_winner(
        self, store: ReplayCache, clock: FakeClock
    ) -> None:
        until = clock.now() + timedelta(seconds=60)
        results: list[bool] = []

        async def attempt() -> None:
            results.append(await store.check_and_store(b"shared", until))

        async with anyio.create_task_group() as group:
            for _ in range(25):
                group.start_soon(attempt)
        assert results.count(True) == 1
        assert len(results) == 25
