"""What the Redis stores share: the client from a URL or given, one event loop, closing.

:class:`~agentguard.storage.RedisReplayCache` and :class:`~agentguard.storage.RedisLimitStore`
each run their own Lua scripts over this. A client built from a URL gives up on a connection or
a reply after ``timeout`` seconds (unless the URL sets ``socket_timeout``), so an unreachable
Redis is a prompt 503; its pool holds ``max_connections`` (64) connections, and a call past
them waits for one (up to ``timeout``) rather than failing. A client passed in is the caller's,
and is not closed here. redis-py's
connections belong to one event loop: a call from another loop raises
:class:`~agentguard.storage.StorageError` instead of touching the pool.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from types import TracebackType
from typing import Any

from typing_extensions import Self

from agentguard._clock import Clock, SystemClock
from agentguard._extras import import_extra
from agentguard.storage._protocols import StorageError

__all__ = ["RedisClient"]


class RedisClient:
    """Base of the Redis stores (see the module docstring); ``kind`` names the store in
    errors."""

    kind = "Redis store"

    def __init__(
        self,
        url_or_client: str | Any,
        *,
        clock: Clock | None,
        prefix: str,
        ttl_margin: timedelta,
        timeout: float,
        max_connections: int = 64,
    ) -> None:
        if ttl_margin < timedelta(0):
            raise ValueError("ttl_margin must not be negative")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if isinstance(url_or_client, str):
            redis_asyncio = import_extra("redis.asyncio")
            # A blocking pool: a burst past max_connections waits (up to ``timeout``) for a
            # connection instead of failing at once, which would refuse calls with 503.
            pool = redis_asyncio.BlockingConnectionPool.from_url(
                url_or_client,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            # from_pool: the client owns the pool, so closing the client closes its connections
            self._client: Any = redis_asyncio.Redis.from_pool(pool)
            self._owns_client = True
        else:
            self._client = url_or_client
            self._owns_client = False
        self.clock: Clock = clock or SystemClock()
        self.prefix = prefix
        self._margin_ms = math.ceil(ttl_margin / timedelta(milliseconds=1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r})"

    def _check_usable(self) -> None:
        """Raise :class:`StorageError` when closed or called from another event loop."""
        name = type(self).__name__
        if self._closed:
            raise StorageError(f"this {name} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise StorageError(
                f"this {name} belongs to another event loop: create one {self.kind} per loop"
            )

    async def ping(self) -> None:
        """Raise unless Redis answers a ``PING`` (the gateway's readiness check)."""
        if not await self._client.ping():
            raise ConnectionError("Redis did not answer PING")

    async def close(self) -> None:
        """Close the client if this store created it from a URL; later calls raise.
        Idempotent."""
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
