"""Per-request overhead of AgentGuardMiddleware on an in-memory store.

Drives each app directly through the ASGI interface (no HTTP client, no sockets), so the
figures compare the guard with a bare Starlette app measured in the same run, not the cost of
a transport. The guarded request does everything a real one does: parse the key, resolve it
live, check the route's permission, append an audit event to the chain.

    python benchmarks/bench_guard.py [--requests N]
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
from report import Row, record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore
from agentguard.testing import make_user

App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


async def contacts(request: Request) -> JSONResponse:
    return JSONResponse({"contacts": ["Ada", "Grace"]})


def scope_for(key: str | None) -> dict[str, Any]:
    headers = [(b"host", b"bench.test"), (b"user-agent", b"bench")]
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/crm/contacts",
        "raw_path": b"/crm/contacts",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("bench.test", 80),
        "client": ("127.0.0.1", 5000),
    }


async def one_request(app: App, key: str | None) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_for(key), receive, send)
    return status


async def measure(app: App, key: str | None, requests: int) -> list[float]:
    for _ in range(200):  # warm up
        assert await one_request(app, key) == 200
    samples: list[float] = []
    gc.collect()
    for _ in range(requests):
        started = time.perf_counter_ns()
        await one_request(app, key)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


async def guarded_app(store: Any) -> tuple[App, str]:
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")])
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    app = AgentGuardMiddleware(Starlette(routes=[Route("/crm/contacts", contacts)]), guard)
    return app, keys.access_key.reveal()


POSTGRES = os.environ.get("AGENTGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def postgres_store() -> PostgresStore | None:
    """A store in a fresh schema, or ``None`` (the row is skipped) without a server."""
    store = PostgresStore(POSTGRES, schema=f"agentguard_bench_{secrets.token_hex(4)}")
    try:
        await store.initialize()
    except (OSError, ConnectionError) as error:
        print(f"(PostgreSQL row skipped: {type(error).__name__} at {POSTGRES})")
        return None
    return store


async def drop(store: PostgresStore) -> None:
    import asyncpg

    await store.close()
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE')
    finally:
        await connection.close()


async def main(requests: int) -> None:
    bare = Starlette(routes=[Route("/crm/contacts", contacts)])
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteStore(Path(directory) / "bench.db")
        postgres = await postgres_store()
        apps = {
            "in-memory store": await guarded_app(MemoryStore()),
            "SQLite store (file, WAL, FULL)": await guarded_app(sqlite),
        }
        if postgres is not None:
            apps["PostgreSQL store (loopback)"] = await guarded_app(postgres)
        rounds: dict[str, list[float]] = {"bare": [], **{name: [] for name in apps}}
        for _ in range(3):  # interleave to even out machine noise
            rounds["bare"].append(statistics.median(await measure(bare, None, requests)))
            for name, (app, key) in apps.items():
                count = requests if name.startswith("in-memory") else max(200, requests // 10)
                rounds[name].append(statistics.median(await measure(app, key, count)))
        await sqlite.close()
        if postgres is not None:
            await drop(postgres)
    bare_us = statistics.median(rounds["bare"])
    rows: list[Row] = []
    print(
        f"guard overhead per request, 3 rounds (median µs/request; {requests} requests in memory)"
    )
    print(f"{'bare Starlette app':<52}{bare_us:>9.1f} µs   1.00x  (baseline)")
    for name in apps:
        guarded_us = statistics.median(rounds[name])
        ratio = guarded_us / bare_us
        overhead = guarded_us - bare_us
        label = f"AgentGuardMiddleware, {name}"
        print(f"{label:<52}{guarded_us:>9.1f} µs   {ratio:.2f}x  (+{overhead:.1f} µs)")
        rows.append(Row("guard", label, guarded_us, "µs", "bare Starlette app", bare_us, True))
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    anyio.run(main, parser.parse_args().requests)
