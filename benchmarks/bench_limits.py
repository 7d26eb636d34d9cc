"""What a budget ``charge`` and a rate-limit ``take`` cost, beside the key ``lookup`` every
guarded request already makes, on each backend, in the same run.

A request under a route with a ``cost`` or a rate limit makes one more store call than the key
lookup: this puts the two side by side, per backend, as a ratio. Redis has no key store, so its
baseline is the replay cache's ``check_and_store`` on the same server (one Lua script, the
same shape of call), with a ``PING`` printed as the round-trip floor. A backend that cannot be
reached (or lacks the methods) is skipped with the reason.

    python benchmarks/bench_limits.py [--calls 2000] [--rounds 5]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
from report import Row, record

from agentguard.storage import MemoryStore, PostgresStore, RedisReplayCache, SQLiteStore
from agentguard.storage._gate_protocols import LimitStore
from agentguard.storage._redis_limits import RedisLimitStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory

Call = Callable[[], Awaitable[object]]


async def per_call_us(call: Call, calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean µs of one call, ``calls`` sequential calls a round."""
    for _ in range(min(calls, 50)):  # warm up: connections, prepared statements, scripts
        await call()
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            await call()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(means)


def limit_calls(store: LimitStore, clock: FakeClock) -> tuple[Call, Call]:
    """A ``take`` that is always allowed and a ``charge`` that always fits, on fresh names."""
    bucket, counter = f"rate:{secrets.token_hex(4)}", f"budget:{secrets.token_hex(4)}"
    until = clock.now() + timedelta(hours=1)

    def take() -> Awaitable[object]:
        return store.take(bucket, interval=0.001, burst=10**9, now=clock.now())

    def charge() -> Awaitable[object]:
        return store.charge(counter, cost=1, limit=10**12, expires_at=until)

    return take, charge


async def lookup_call(store: Any, clock: FakeClock) -> Call:
    """A ``lookup`` of a stored key with its user, account and membership."""
    await seed_directory(store)
    record = key_record(clock)
    await store.insert_keys([record])
    return lambda: store.lookup(record.key_hash)


@asynccontextmanager
async def postgres(dsn: str, clock: FakeClock) -> AsyncIterator[PostgresStore]:
    """A PostgresStore in a schema of its own, dropped afterwards."""
    import asyncpg

    schema = f"agentguard_bench_{secrets.token_hex(4)}"
    try:
        async with PostgresStore(dsn, clock=clock, schema=schema) as store:
            yield store
    finally:
        connection = await asyncpg.connect(dsn)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


async def forget(url: str, prefix: str) -> None:
    """Delete the keys the run left in Redis."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


Backend = tuple[str, Any, str, Call | None, str | None]


async def backends(
    options: argparse.Namespace, clock: FakeClock, stack: AsyncExitStack
) -> AsyncIterator[Backend]:
    """``(name, store or None, baseline name, baseline call, skip reason)`` per backend."""
    memory = MemoryStore(clock=clock)
    yield "memory", memory, "MemoryStore.lookup", await lookup_call(memory, clock), None
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    sqlite = await stack.enter_async_context(SQLiteStore(folder / "bench.db", clock=clock))
    yield "SQLite", sqlite, "SQLiteStore.lookup", await lookup_call(sqlite, clock), None
    try:
        pg = await stack.enter_async_context(postgres(options.postgres, clock))
        yield "PostgreSQL", pg, "PostgresStore.lookup", await lookup_call(pg, clock), None
    except Exception as error:  # a benchmark, not the product: report and go on
        yield "PostgreSQL", None, "", None, f"{type(error).__name__}: {error}"
    prefix = f"agentguard_bench_{secrets.token_hex(4)}:"
    try:
        redis = await stack.enter_async_context(
            RedisLimitStore(options.redis, clock=clock, prefix=prefix)
        )
        replay = await stack.enter_async_context(
            RedisReplayCache(options.redis, clock=clock, prefix=prefix + "replay:")
        )
        await redis.ping()
        stack.push_async_callback(forget, options.redis, prefix)
        print(f"  Redis PING: {await per_call_us(redis.ping, options.calls, 1):.1f} us")
        until = clock.now() + timedelta(minutes=5)

        def claim() -> Awaitable[bool]:
            return replay.check_and_store(secrets.token_bytes(16), until)

        yield "Redis", redis, "RedisReplayCache.check_and_store", claim, None
    except Exception as error:
        yield "Redis", None, "", None, f"{type(error).__name__}: {error}"


async def main(options: argparse.Namespace) -> None:
    clock = FakeClock()
    rows: list[Row] = []
    print(f"{options.calls} sequential calls a round, median of {options.rounds} rounds")
    async with AsyncExitStack() as stack:
        async for name, store, base_name, baseline, skipped in backends(options, clock, stack):
            if store is None or baseline is None:
                print(f"{name}: skipped ({skipped})")
                continue
            if not isinstance(store, LimitStore):
                print(f"{name}: skipped (no take/charge yet)")
                continue
            take, charge = limit_calls(store, clock)
            base = await per_call_us(baseline, options.calls, options.rounds)
            print(f"{name}:\n  {base_name:<34} {base:8.1f} us")
            for label, call in (("take (rate limit)", take), ("charge (budget)", charge)):
                value = await per_call_us(call, options.calls, options.rounds)
                print(f"  {label:<34} {value:8.1f} us  {value / base:5.2f}x")
                rows.append(Row("limits", f"{name} {label}", value, "µs", base_name, base, True))
        if not rows:
            raise SystemExit("no backend was measured")
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "AGENTGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis", default=os.environ.get("AGENTGUARD_TEST_REDIS", "redis://127.0.0.1:6379/15")
    )
    anyio.run(main, parser.parse_args())
