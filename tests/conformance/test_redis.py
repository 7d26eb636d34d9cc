"""RedisReplayCache passes the replay-cache contract, each test under a key prefix of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentguard.storage.redis import RedisReplayCache
from agentguard.testing import FakeClock
from agentguard.testing.conformance import ReplayCacheContract
from tests.backends.services import random_name, redis_url


class TestRedisReplayCache(ReplayCacheContract):
    @pytest.fixture
    async def store(self, clock: FakeClock) -> AsyncIterator[RedisReplayCache]:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(await redis_url())
        prefix = random_name("agentguard_test") + ":"
        try:
            yield RedisReplayCache(client, clock=clock, prefix=prefix)
        finally:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
