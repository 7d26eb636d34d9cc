"""Redis backend for the limit gates (extra ``agentguard[redis]``): budgets and rate limits.

:class:`RedisLimitStore` is a :class:`~agentguard.storage.LimitStore` shared by every instance
of the app: :meth:`~RedisLimitStore.charge` and :meth:`~RedisLimitStore.take` are one Lua
script each, so a check and its update are one atomic step on the server and one round trip.

Time is never Redis's: ``take`` runs GCRA on the ``now`` its caller passes, as integer
microseconds since the epoch (the bucket's stored value is its theoretical arrival time), so
every instance and the tests' fake clock agree with the reference model to the microsecond.
Memory is Redis's to reclaim: a counter's key lives until its window ends by the store's
``clock``, a bucket's until its arrival time, each plus ``ttl_margin``; both TTLs are relative
(``PX``), which assumes the injected clock runs at real speed (the margin covers skew between
instances). Keys are ``<prefix>c:<counter>`` and ``<prefix>r:<bucket>``.

Conventions are :class:`~agentguard.storage.RedisReplayCache`'s: the driver (redis-py's asyncio
client) is imported when a store is built; a store built from a URL gives up on a connection or
a command after ``timeout`` seconds; a driver failure surfaces as
:class:`~agentguard.storage.StorageError` naming only the exception's type; a store belongs to
the event loop that first uses it and refuses calls from another.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from agentguard._clock import Clock, utc
from agentguard.storage._driver_errors import driver_errors
from agentguard.storage._gate_protocols import Charge, RateDecision
from agentguard.storage._gcra import check_units, epoch_micros, interval_micros
from agentguard.storage._redis_client import RedisClient

__all__ = ["RedisLimitStore"]

# KEYS[1] the counter; ARGV: cost, limit, TTL in milliseconds. Returns {allowed, used}.
_CHARGE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost > tonumber(ARGV[2]) then
    return {0, used}
end
if cost > 0 then
    used = redis.call('INCRBY', KEYS[1], cost)
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
"""

# KEYS[1] the bucket; ARGV: now and interval (µs), burst, TTL margin (ms).
# Returns {1, 0} when allowed, else {0, retry_after in µs}. Integers stay below 2^53, so
# Lua's doubles hold them exactly; '%.0f' writes them back without an exponent.
_TAKE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local arrival = math.max(tat, now) + interval
local over = arrival - now - tonumber(ARGV[3]) * interval
if over > 0 then
    return {0, over}
end
local ttl = math.ceil((arrival - now) / 1000) + tonumber(ARGV[4])
redis.call('SET', KEYS[1], string.format('%.0f', arrival), 'PX', ttl)
return {1, 0}
"""


class RedisLimitStore(RedisClient):
    """A :class:`~agentguard.storage.LimitStore` on Redis, atomic across instances.

    Args:
        url_or_client: a ``redis://`` / ``rediss://`` / ``unix://`` URL, or an existing
            ``redis.asyncio.Redis`` client (which the store then does not close).
        clock: the clock a budget window's remaining lifetime is measured by (its key's TTL);
            the system clock by default. Rate limits use the ``now`` each call brings.
        prefix: prepended to every key, so several apps or tests can share one database.
        ttl_margin: extra lifetime Redis keeps a counter or a bucket beyond its end.
        timeout: seconds to connect and to wait for a reply, for a store built from a URL (a
            ``socket_timeout`` or ``socket_connect_timeout`` in the URL wins).
        max_connections: the connection pool's size, for a store built from a URL; a call
            past it waits (up to ``timeout``) for a connection instead of failing.
    """

    kind = "store"

    def __init__(
        self,
        url_or_client: str | Any,
        *,
        clock: Clock | None = None,
        prefix: str = "agentguard:limits:",
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
        encoded = prefix.encode("utf-8")
        self._counters = encoded + b"c:"
        self._buckets = encoded + b"r:"
        self._charge: Any = self._client.register_script(_CHARGE)
        self._take: Any = self._client.register_script(_TAKE)

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Charge:
        """Add ``cost`` to ``counter`` if the total stays within ``limit``: one Lua script.

        The counter's key expires ``ttl_margin`` after ``expires_at`` by the store's clock.
        Raises :class:`~agentguard.storage.StorageError` when Redis fails, the store is closed
        or the call comes from another event loop than the store's first one.
        """
        check_units(cost, limit)
        self._check_usable()
        remaining = utc(expires_at) - self.clock.now()
        ttl_ms = max(0, math.ceil(remaining / timedelta(milliseconds=1))) + self._margin_ms
        key = self._counters + counter.encode("utf-8")
        with driver_errors("Redis"):
            allowed, used = await self._charge(keys=[key], args=[cost, limit, max(1, ttl_ms)])
        return Charge(bool(allowed), int(used))

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        """Take one call from ``bucket`` (GCRA in integer microseconds): one Lua script.

        Raises :class:`~agentguard.storage.StorageError` like :meth:`charge`.
        """
        interval_us = interval_micros(interval, burst)
        self._check_usable()
        key = self._buckets + bucket.encode("utf-8")
        args = [epoch_micros(now), interval_us, burst, self._margin_ms]
        with driver_errors("Redis"):
            allowed, retry_us = await self._take(keys=[key], args=args)
        if allowed:
            return RateDecision(True, 0.0)
        return RateDecision(False, int(retry_us) / 1_000_000)
