"""Revoke → cut: how long an open stream on instance B lives after instance A revokes its key.

Two guards, each with its own store object over one shared database, as two app instances.
Each round issues a key, holds a stream lease for it on B (B's re-check interval is an hour,
so only the revocation event can cut it), revokes the key through A, and times until B's lease
is cut. Three feeds:

- PostgreSQL ``LISTEN/NOTIFY`` (the revocation triggers), against the same run's baselines:
  one key look-up on B and one bare ``NOTIFY`` round trip between two connections;
- SQLite ``PRAGMA data_version`` (polled every ``poll_interval``, 0.2 s by default), against one
  look-up;
- the interval alone (events off, ``--interval`` seconds, on SQLite): the worst case a
  deployment without any feed has, against the interval itself.

The time includes the revoking write on A (its commit is what notifies).

    python benchmarks/bench_stream_cut.py [--rounds 50] [--interval 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from report import Row, record

from agentguard import Guard
from agentguard.config import StreamSettings
from agentguard.storage import PostgresStore, SQLiteStore
from agentguard.storage._postgres._notify import install_notify
from agentguard.testing import make_user

DSNS = (
    os.environ.get("AGENTGUARD_TEST_POSTGRES", ""),
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


RANDOM = random.Random(7)


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, samples: list[float]) -> tuple[float, float]:
    p50, p99 = percentile(samples, 0.5) * 1000, percentile(samples, 0.99) * 1000
    print(f"  {name:<44} p50 {p50:9.2f} ms   p99 {p99:9.2f} ms   (n={len(samples)})")
    return p50, p99


async def timed(work: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return samples


async def cut_latencies(
    a: Guard, b: Guard, rounds: int, phase: float
) -> tuple[list[float], list[float], list[float]]:
    """Per round: a fresh key, a lease on B, a random wait (up to ``phase`` seconds, so the
    revocation falls anywhere in B's poll or interval), revoke through A. Returns the seconds
    from the revoke call to the cut, the revoke call's own time, and from its return to the
    cut."""
    user = await make_user(a.store, grants="crm:read")
    await b.streams.start()
    deadline = time.monotonic() + 10
    while not b.streams.listening() and b.streams.feed is not None:
        if time.monotonic() > deadline:
            raise RuntimeError("B's revocation feed did not come up")
        await asyncio.sleep(0.01)
    total, write, after = [], [], []
    for _ in range(rounds):
        keys = await a.issuer.issue(user.id, "ws-1")
        key = keys.access_key.reveal()
        principal = await b.resolve(key)
        async with b.streams.hold(principal, key=key) as lease:
            await asyncio.sleep(0.02 + RANDOM.uniform(0, phase))
            started = time.perf_counter()
            await a.issuer.revoke(key_id=keys.access.id)
            returned = time.perf_counter()
            await asyncio.wait_for(lease.wait(), 30)
            ended = time.perf_counter()
        total.append(ended - started)
        write.append(returned - started)
        after.append(ended - returned)
    await b.streams.aclose()
    return total, write, after


def report(samples: tuple[list[float], list[float], list[float]]) -> tuple[float, float]:
    total, write, after = samples
    summary("  the revoke call on A (write + audit)", write)
    summary("  from its return to the cut", after)
    return summary("revoke on A → stream cut on B", total)


async def lookup_times(b: Guard, a: Guard, rounds: int) -> list[float]:
    user = await make_user(a.store, user_id="lookup-user", grants="crm:read")
    key = (await a.issuer.issue(user.id, "ws-1")).access_key.reveal()
    await b.lookup(key)  # warm
    return await timed(lambda: b.lookup(key), rounds)


async def notify_round_trips(dsn: str, rounds: int) -> list[float]:
    import asyncpg

    listener, sender = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    arrived: asyncio.Queue[float] = asyncio.Queue()
    channel = "bench_" + secrets.token_hex(4)
    await listener.add_listener(channel, lambda *_: arrived.put_nowait(time.perf_counter()))
    samples = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            await sender.execute("SELECT pg_notify($1, '{}')", channel)
            samples.append(await asyncio.wait_for(arrived.get(), 10) - started)
    finally:
        await listener.close()
        await sender.close()
    return samples


async def find_dsn() -> str:
    import asyncpg

    for dsn in filter(None, DSNS):
        try:
            connection = await asyncpg.connect(dsn, timeout=3)
        except Exception:  # noqa: S112 - try the next candidate
            continue
        await connection.close()
        return dsn
    raise SystemExit("no PostgreSQL reachable (set AGENTGUARD_TEST_POSTGRES)")


async def postgres(rounds: int) -> list[Row]:
    import asyncpg

    dsn = await find_dsn()
    schema = "agentguard_bench_" + secrets.token_hex(4)
    store_a, store_b = PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)
    try:
        await store_a.initialize()
        await store_b.initialize()
        connection = await asyncpg.connect(dsn)
        await install_notify(connection, schema)
        a = Guard(store_a, streams=StreamSettings(events="off"))
        b = Guard(store_b, streams=StreamSettings(recheck_interval=3600.0))
        print("PostgreSQL, two instances, LISTEN/NOTIFY")
        lookup, _ = summary("baseline: one key look-up on B", await lookup_times(b, a, rounds))
        notify, _ = summary(
            "baseline: one NOTIFY round trip", await notify_round_trips(dsn, rounds)
        )
        cut, cut99 = report(await cut_latencies(a, b, rounds, 0.0))
        await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await connection.close()
    finally:
        await store_a.close()
        await store_b.close()
    name = "revoke→cut, PostgreSQL NOTIFY"
    return [
        Row("streams", f"{name}: p50", cut, "ms", "NOTIFY round trip", notify, True),
        Row("streams", f"{name}: p99", cut99, "ms", "key look-up", lookup, True),
    ]


async def sqlite(rounds: int, interval: float | None) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shared.db"
        store_a, store_b = SQLiteStore(path), SQLiteStore(path)
        try:
            a = Guard(store_a, streams=StreamSettings(events="off"))
            if interval is None:
                settings = StreamSettings(recheck_interval=3600.0)
                title = "SQLite, two instances, data_version polled every 0.2 s"
            else:
                settings = StreamSettings(recheck_interval=interval, events="off")
                title = f"SQLite, two instances, no events: re-check every {interval} s"
            b = Guard(store_b, streams=settings)
            print(title)
            lookup, _ = summary("baseline: one key look-up on B", await lookup_times(b, a, rounds))
            phase = settings.poll_interval if interval is None else interval
            cut, cut99 = report(await cut_latencies(a, b, rounds, phase))
        finally:
            await store_a.close()
            await store_b.close()
    if interval is None:
        name, poll = "revoke→cut, SQLite data_version", settings.poll_interval * 1000
        return [
            Row("streams", f"{name}: p50", cut, "ms", "poll interval", poll, True),
            Row("streams", f"{name}: p99", cut99, "ms", "key look-up", lookup, True),
        ]
    name, every = "revoke→cut, interval only", interval * 1000
    return [
        Row("streams", f"{name}: p50", cut, "ms", "interval", every, True),
        Row("streams", f"{name}: p99", cut99, "ms", "interval", every, True),
    ]


async def main_async(rounds: int, interval: float, skip_postgres: bool) -> None:
    rows: list[Row] = []
    if not skip_postgres:
        rows += await postgres(rounds)
    rows += await sqlite(rounds, None)
    rows += await sqlite(max(5, rounds // 3), interval)
    record(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0, help="the interval-only case")
    parser.add_argument("--quick", action="store_true", help="15 rounds")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    rounds = 15 if args.quick else args.rounds
    asyncio.run(main_async(rounds, args.interval, args.no_postgres))


if __name__ == "__main__":
    main()
