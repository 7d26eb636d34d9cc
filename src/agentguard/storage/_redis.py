"""Redis backend (extra ``agentguard[redis]``): the replay cache shared by every instance.

:class:`RedisReplayCache` claims a one-time id (a DPoP ``jti``, a nonce) with one Lua script, so
the check and the store are one atomic step on the server. Expiry follows the clock injected
into the cache, not Redis's: the stored value is the entry's expiry instant (integer
microseconds), and a key counts as present only while that instant is after "now" by the cache's
clock, which the script receives as an argument. Each key also gets a Redis TTL of its remaining
lifetime plus a margin, so Redis reclaims the memory by itself; this assumes the injected clock
runs at real speed (the margin covers skew between instances).

The driver, ``redis`` (redis-py's asyncio client), is imported when a cache is built; without
it the constructor raises :class:`~agentguard.errors.ConfigurationError` naming the extra to
install. A cache built from a URL gives up on a connection or a command after ``timeout``
seconds (two by default, unless the URL sets ``socket_timeout``), so an unreachable Redis is a
prompt 503 from the guard rather than a request that hangs. A driver failure surfaces as
:class:`~agentguard.storage.StorageError` naming only the driver exception's type. One cache
belongs to one event loop (redis-py's connections do): a call from another loop raises
:class:`~agentguard.storage.StorageError` instead of touching the connection pool.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from agentguard._clock import Clock, utc
from agentguard.storage._driver_errors import driver_errors
from agentguard.storage._redis_client import RedisClient

__all__ = ["RedisReplayCache"]

# KEYS[1] the entry; ARGV: now, expires_at (µs since the epoch), TTL in milliseconds.
# Returns 1 if the caller claimed the key, 0 if a live entry holds it.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) > tonumber(ARGV[1]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(moment: datetime) -> int:
    """Whole microseconds since the epoch, exactly (no float rounding)."""
    return (utc(moment) - _EPOCH) // timedelta(microseconds=1)


class RedisReplayCache(RedisClient):
    """A :class:`~agentguard.storage.ReplayCache` on Redis, atomic across instances.

    Args:
        url_or_client: a ``redis://`` / ``rediss://`` / ``unix://`` URL, or an existing
            ``redis.asyncio.Redis`` client (which the cache then does not close).
        clock: the clock that decides expiry; the system clock by default.
        prefix: prepended to every key, so several apps or tests can share one database.
        ttl_margin: extra lifetime Redis keeps an entry beyond its expiry.
        timeout: seconds to connect and to wait for a reply, for a cache built from a URL (a
            ``socket_timeout`` or ``socket_connect_timeout`` in the URL wins).
        max_connections: the connection pool's size, for a cache built from a URL; a call
            past it waits (up to ``timeout``) for a connection instead of failing.
    """

    kind = "cache"

    def __init__(
        self,
        url_or_client: str | Any,
        *,
        clock: Clock | None = None,
        prefix: str = "agentguard:replay:",
        ttl_margin: timedelta = timedelta(seconds=30),
        timeout: float = 2.0,
        max_connections: int = 64,
    ) -> None:
        super().__init__(
            url_or_client,
            clock=clock,
            prefix=prefix,
            ttl_margin=ttl_margin,
            timeout=timeout,
            max_connections=max_connections,
        )
        self._prefix = prefix.encode("utf-8")
        self._claim: Any = self._client.register_script(_CLAIM)

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        """Store ``key`` until ``expires_at``; ``True`` if it was absent or expired by ``clock``.

        One Lua script: of concurrent calls with one key, from any instance, exactly one wins.
        Raises :class:`~agentguard.storage.StorageError` when Redis fails, the cache is closed
        or the call comes from another event loop than the cache's first one.
        """
        self._check_usable()
        now = _micros(self.clock.now())
        until = _micros(expires_at)
        ttl_ms = max(0, math.ceil((until - now) / 1000)) + self._margin_ms
        with driver_errors("Redis"):
            claimed = await self._claim(
                keys=[self._prefix + bytes(key)], args=[now, until, max(1, ttl_ms)]
            )
        return bool(claimed)
