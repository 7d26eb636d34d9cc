"""Proxied GET through the guard vs a bare httpx pass-through proxy, same upstream, one run.

The upstream is a minimal ASGI app served by uvicorn in a subprocess on loopback. Both proxies
run in this process and are driven through the ASGI interface by concurrent callers, so the
figures compare the proxies, not an HTTP client. The guarded path does everything a real call
does: take the placeholder from ``X-Api-Key``, resolve it live, check the level, audit the
decision, decrypt the real key, strip and attach, forward, and scan the response for the key.

    python benchmarks/bench_proxy.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import MutableMapping
from typing import Any

import anyio
import httpx
from report import Row, record

from agentguard import CredentialOwner, CredentialScope, Guard, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import make_user

UPSTREAM = textwrap.dedent(
    """
    import sys, uvicorn
    BODY = b'{"contacts": ["Ada", "Grace", "Hedy"], "total": 3}'
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
                lifespan="off", access_log=False)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BareProxy:
    """Forwards every request to the upstream with httpx: no guard, no swap, no scan."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(trust_env=False)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"host",)]
        response = await self.client.request(
            scope["method"], self.base_url + scope["path"], headers=headers
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.headers.raw,
            }
        )
        await send({"type": "http.response.body", "body": response.content})


def scope_for(key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/contacts",
        "raw_path": b"/contacts",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"gw.test"), (b"x-api-key", key.encode()), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 5000),
    }


async def drive(app: Any, key: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one() -> None:
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        started = time.perf_counter()
        await app(scope_for(key), receive, send)
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"unexpected status {status}")

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker, requests // concurrency)
    elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main(requests: int, concurrency: int) -> None:
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)])  # noqa: S603
    try:
        anyio.run(measure, f"http://127.0.0.1:{port}", requests, concurrency)
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


async def measure(base: str, requests: int, concurrency: int) -> None:
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as probe:
        while True:
            try:
                await probe.get(base + "/")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.05)
    store = MemoryStore()
    vault = CredentialVault(store, KeyRing.generate())
    service = ServiceConfig(
        name="crm",
        base_url=base,
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
    )
    guard = Guard(store, services=[service], swapper=CredentialSwapper(vault))
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    await vault.put(
        "crm",
        CredentialOwner.USER,
        user.id,
        "crm-real-key-1234567890abcdef",
        scope=CredentialScope.USER,
    )
    guarded = ProxyApp(guard, "crm")
    bare = BareProxy(base)
    key = keys.access_key.reveal()
    await drive(bare, key, 400, concurrency)  # warm up both pools
    await drive(guarded, key, 400, concurrency)
    rounds: dict[str, list[tuple[float, list[float]]]] = {"bare": [], "guarded": []}
    for _ in range(3):
        rounds["bare"].append(await drive(bare, key, requests, concurrency))
        rounds["guarded"].append(await drive(guarded, key, requests, concurrency))
    await guarded.aclose()
    await bare.client.aclose()

    print(f"proxied GET, {requests} requests x 3 rounds, {concurrency} concurrent callers")
    print(f"{'proxy':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'of bare':>9}")
    bare_rate = statistics.median(rate for rate, _ in rounds["bare"])
    figures: dict[str, tuple[float, float, float]] = {}
    for name, label in (("bare", "bare httpx pass-through"), ("guarded", "agentguard ProxyApp")):
        rate = statistics.median(r for r, _ in rounds[name])
        latencies = [value for _, samples in rounds[name] for value in samples]
        figures[name] = (rate, p(latencies, 50), p(latencies, 99))
        print(
            f"{label:<34}{rate:>9.0f}{p(latencies, 50):>9.2f}{p(latencies, 99):>9.2f}"
            f"{rate / bare_rate:>8.0%}"
        )
    (g_rate, g_p50, g_p99), (b_rate, b_p50, b_p99) = figures["guarded"], figures["bare"]
    baseline = "bare httpx pass-through"
    record(
        [
            Row("proxy", "ProxyApp throughput", g_rate, "req/s", baseline, b_rate, False),
            Row("proxy", "ProxyApp p50 latency", g_p50, "ms", baseline, b_p50, True),
            Row("proxy", "ProxyApp p99 latency", g_p99, "ms", baseline, b_p99, True),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    arguments = parser.parse_args()
    main(arguments.requests, arguments.concurrency)
