"""RedisReplayCache passes the replay-cache contracts, RedisLimitStore the limit contract, each
test under a key prefix of its own.

``other_store`` is a second cache (store) on its own client (its own connections, as another app
instance has) over the same server and prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import anyio.to_thread
import pytest

from agentguard.storage import RedisReplayCache, StorageError
from agentguard.storage._redis_limits import RedisLimitStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    FailureContract,
    LimitContract,
    MultiInstanceReplayContract,
    OtherLoopContract,
    ReplayCacheContract,
)
from agentguard.wsgi._portal import EventLoopPortal
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


async def _clean(url: str, prefix: str) -> None:
    import redis.asyncio

    cleaner = redis.asyncio.Redis.from_url(url)  # a test may have broken the store's client
    keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*")]
    if keys:
        await cleaner.delete(*keys)
    await cleaner.aclose()


class TestRedisLimitStore(LimitContract):
    """``other_store`` is a second ``RedisLimitStore`` on its own client, same server and prefix."""

    store_type = RedisLimitStore

    @pytest.fixture
    def prefix(self) -> str:
        return random_name("agentguard_test") + ":"

    @pytest.fixture
    async def store(self, clock: FakeClock, prefix: str) -> AsyncIterator[RedisLimitStore]:
        url = await redis_url()
        try:
            async with RedisLimitStore(url, clock=clock, prefix=prefix) as store:
                yield store
        finally:
            await _clean(url, prefix)

    @pytest.fixture
    async def other_store(
        self, store: RedisLimitStore, clock: FakeClock, prefix: str
    ) -> AsyncIterator[RedisLimitStore]:
        async with RedisLimitStore(await redis_url(), clock=clock, prefix=prefix) as other:
            yield other

    async def test_keys_expire_after_their_window_and_arrival_time(
        self, store: RedisLimitStore, clock: FakeClock, prefix: str
    ) -> None:
        """Redis reclaims counters and buckets by itself: each key carries a TTL."""
        client = store._client
        await store.charge("c1", cost=1, limit=5, expires_at=clock.now() + timedelta(minutes=2))
        await store.take("b1", interval=10, burst=3, now=clock.now())
        counter_ttl = await client.pttl(f"{prefix}c:c1")
        bucket_ttl = await client.pttl(f"{prefix}r:b1")
        assert 120_000 < counter_ttl <= 150_000  # the window, plus the 30 s margin
        assert 0 < bucket_ttl <= 40_000  # the arrival time (10 s ahead), plus the margin
        await store.charge("c0", cost=0, limit=5, expires_at=clock.now() + timedelta(minutes=2))
        assert await client.exists(f"{prefix}c:c0") == 0  # a read stores nothing

    async def test_redis_failure_raises_storage_error(
        self, store: RedisLimitStore, clock: FakeClock
    ) -> None:
        pool = store._client.connection_pool  # Redis goes away, as in break_store above
        await pool.disconnect()
        pool.connection_kwargs["port"] = free_port()
        pool.reset()
        until = clock.now() + timedelta(minutes=1)
        for _ in range(2):
            with pytest.raises(StorageError) as charge_error:
                await store.charge("c1", cost=1, limit=5, expires_at=until)
            with pytest.raises(StorageError):
                await store.take("b1", interval=1, burst=1, now=clock.now())
            assert "c1" not in str(charge_error.value)

    async def test_a_call_from_another_loop_raises_storage_error(
        self, store: RedisLimitStore, clock: FakeClock
    ) -> None:
        assert (await store.take("b1", interval=1, burst=1, now=clock.now())).allowed
        portal = EventLoopPortal("asyncio")
        try:

            async def elsewhere() -> object:
                return await store.take("b1", interval=1, burst=1, now=clock.now())

            with pytest.raises(StorageError, match="another event loop"):
                await anyio.to_thread.run_sync(portal.call, elsewhere)
        finally:
            portal.close()
        refused = await store.take("b1", interval=1, burst=1, now=clock.now())
        assert refused.allowed is False  # still working on its own loop

    async def test_closed_store_raises_storage_error(
        self, store: RedisLimitStore, clock: FakeClock
    ) -> None:
        await store.close()
        with pytest.raises(StorageError, match="closed"):
            await store.charge("c1", cost=1, limit=5, expires_at=clock.now())
