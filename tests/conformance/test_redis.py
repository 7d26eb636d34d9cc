"""RedisReplayCache passes the replay-cache contracts, each test under a key prefix of its own.

``other_store`` is a second ``RedisReplayCache`` on its own client (its own connections, as
another app instance has) over the same server and prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard.storage import RedisReplayCache
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    FailureContract,
    MultiInstanceReplayContract,
    OtherLoopContract,
    ReplayCacheContract,
)
from tests.backends.services import random_name, redis_url
from tests.support.servers import free_port


class TestRedisReplayCache(
    ReplayCacheContract, MultiInstanceReplayContract, FailureContract, OtherLoopContract
):
    store_type = RedisReplayCache
    loop_bound = True  # redis-py connections belong to one loop: one cache per loop

    async def break_store(self, store: RedisReplayCache) -> None:
        """Redis goes away: drop the connections and send new ones where nothing listens."""
        pool = store._client.connection_pool
        await pool.disconnect()
        pool.connection_kwargs["port"] = free_port()
        pool.reset()  # forget the old connections: new ones go to the dead port

    @pytest.fixture
    def prefix(self) -> str:
        return random_name("agentguard_test") + ":"

    @pytest.fixture
    async def store(self, clock: FakeClock, prefix: str) -> AsyncIterator[RedisReplayCache]:
        import redis.asyncio

        url = await redis_url()
        client = redis.asyncio.Redis.from_url(url)
        try:
            yield RedisReplayCache(client, clock=clock, prefix=prefix)
        finally:
            await client.aclose()
            cleaner = redis.asyncio.Redis.from_url(url)  # a test may have broken `client`
            keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*")]
            if keys:
                await cleaner.delete(*keys)
            await cleaner.aclose()

    @pytest.fixture
    async def other_store(
        self, store: RedisReplayCache, clock: FakeClock, prefix: str
    ) -> AsyncIterator[RedisReplayCache]:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(await redis_url())
        try:
            yield RedisReplayCache(client, clock=clock, prefix=prefix)
        finally:
            await client.aclose()
