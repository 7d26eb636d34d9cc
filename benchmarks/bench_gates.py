"""Guard overhead with a budget and a rate limit on, against the same guard without, one run.

Drives each app through the ASGI interface (no sockets), like ``bench_guard.py``: the bare
Starlette app, the guard without gates, the guard with one budget and one rate limit (counters
in the same in-memory store), and the same with the counters on Redis when a server answers at
``AGENTGUARD_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``). The limits are set so that
no request is refused (every request pays the full check-and-charge).

    python benchmarks/bench_gates.py [--requests N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
from datetime import timedelta
from typing import Any

import anyio
from bench_guard import App, contacts, measure
from report import Row, record
from starlette.applications import Starlette
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.limits import Budget, RateLimit
from agentguard.storage import MemoryStore
from agentguard.testing import make_user

REDIS = os.environ.get("AGENTGUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
HUGE = 10**12


async def app_with(limit_store: Any = None, *, gates: bool) -> tuple[App, str]:
    store = MemoryStore()
    options: dict[str, Any] = {}
    if gates:
        options = {
            "budgets": [Budget("bench-daily", HUGE, timedelta(days=1), service="crm")],
            "rate_limits": [RateLimit("bench-rate", 1e6, burst=HUGE)],
            "limit_store": limit_store,
        }
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")], **options)
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    app = AgentGuardMiddleware(Starlette(routes=[Route("/crm/contacts", contacts)]), guard)
    return app, keys.access_key.reveal()


async def redis_store() -> Any:
    """A RedisLimitStore on a fresh key prefix, or ``None`` (the row is skipped)."""
    from agentguard.storage import RedisLimitStore

    store = RedisLimitStore(REDIS, prefix=f"agentguard-bench-{secrets.token_hex(4)}:")
    try:
        await store.take("probe", interval=1.0, burst=1, now=_now())
    except Exception as error:  # no server: skip the row, say why
        print(f"(Redis row skipped: {type(error).__name__} at {REDIS})")
        await store.close()
        return None
    return store


def _now() -> Any:
    from agentguard._clock import SystemClock

    return SystemClock().now()


async def main(requests: int) -> None:
    bare = Starlette(routes=[Route("/crm/contacts", contacts)])
    apps = {
        "guard, no limits": await app_with(gates=False),
        "guard + budget + rate limit (in memory)": await app_with(gates=True),
    }
    redis = await redis_store()
    if redis is not None:
        apps["guard + budget + rate limit (Redis)"] = await app_with(redis, gates=True)
    rounds: dict[str, list[float]] = {"bare": [], **{name: [] for name in apps}}
    for _ in range(3):  # interleaved rounds even out machine noise
        rounds["bare"].append(statistics.median(await measure(bare, None, requests)))
        for name, (app, key) in apps.items():
            count = requests if "Redis" not in name else max(500, requests // 5)
            rounds[name].append(statistics.median(await measure(app, key, count)))
    if redis is not None:
        await redis.close()
    bare_us = statistics.median(rounds["bare"])
    plain_us = statistics.median(rounds["guard, no limits"])
    print(f"gate overhead per request, 3 rounds (median µs/request; {requests} requests)")
    print(f"{'bare Starlette app':<46}{bare_us:>9.1f} µs")
    rows: list[Row] = []
    for name in apps:
        value = statistics.median(rounds[name])
        print(
            f"{name:<46}{value:>9.1f} µs   {value / plain_us:.2f}x the guard without limits"
            f"  (+{value - plain_us:.1f} µs)"
        )
        if name != "guard, no limits":
            rows.append(Row("gates", name, value, "µs", "guard, no limits", plain_us, True))
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    anyio.run(main, parser.parse_args().requests)
