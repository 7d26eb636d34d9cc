"""Server-sent events through the guard vs straight from the upstream, same stream, one run.

The upstream (uvicorn in a subprocess, on loopback) answers every GET with a
``text/event-stream`` of small JSON events spaced in time. The guarded gateway (ProxyApp,
uvicorn in a thread of this process) swaps the key, scans every chunk for it and relays it
event by event. An httpx client reads the stream both ways, alternating, and notes when the
first and the last event arrive: the time to the first event is the figure a buffering proxy
ruins (it becomes the whole stream's duration).

Also measured: the echo scan's cost per event (the sliding-window scanner, which holds back only
what could begin a form of the key) next to one whole-text search of the same event.

    python benchmarks/bench_streams.py [--events N] [--spacing S] [--rounds R]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import anyio
import httpx
import uvicorn
from report import Row, record

from agentguard import CredentialOwner, CredentialScope, Guard, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, EchoScanner, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import make_user

REAL_KEY = "crm-real-key-1234567890abcdefghijklmnop"
UPSTREAM = textwrap.dedent(
    """
    import asyncio, sys, uvicorn
    EVENTS, SPACING = int(sys.argv[2]), float(sys.argv[3])
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache")]})
        for n in range(EVENTS):
            body = b'data: {"n": %d, "delta": "token %d"}\\n\\n' % (n, n)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await asyncio.sleep(SPACING)
        await send({"type": "http.response.body", "body": b""})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
                lifespan="off", access_log=False)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(url: str) -> None:
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as probe:
        while True:
            try:
                async with probe.stream("GET", url) as response:
                    await response.aclose()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.05)


async def read_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], events: int
) -> tuple[float, float]:
    """Milliseconds to the first and to the last event of one stream."""
    started = time.perf_counter()
    first = 0.0
    received = b""
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"unexpected status {response.status_code}")
        async for piece in response.aiter_raw():
            received += piece
            if not first and b"\n\n" in received:
                first = time.perf_counter()
    if received.count(b"\n\n") != events:
        raise RuntimeError("events were lost")
    return (first - started) * 1000, (time.perf_counter() - started) * 1000


async def gateway_app(base: str) -> tuple[ProxyApp, str]:
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
    await vault.put("crm", CredentialOwner.USER, user.id, REAL_KEY, scope=CredentialScope.USER)
    return ProxyApp(guard, "crm"), keys.access_key.reveal()


def scan_costs(events: int) -> tuple[float, float]:
    """Microseconds per SSE event: the streamed echo scan vs one whole-text search."""
    scanner = EchoScanner([REAL_KEY])
    bodies = [b'data: {"n": %d, "delta": "token \\u00e9 %d"}\n\n' % (n, n) for n in range(events)]
    stream = scanner.stream()
    started = time.perf_counter()
    for body in bodies:
        stream.feed(body)
    streamed = (time.perf_counter() - started) / events * 1e6
    started = time.perf_counter()
    for body in bodies:
        scanner.found_in(body)
    whole = (time.perf_counter() - started) / events * 1e6
    return streamed, whole


async def measure(base: str, events: int, spacing: float, rounds: int) -> None:
    await wait_for(base + "/events")
    proxy, key = await gateway_app(base)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(proxy, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):  # ten seconds at most
        if server.started:
            break
        await anyio.sleep(0.01)
    else:
        raise RuntimeError("the gateway did not start")
    gateway = f"http://127.0.0.1:{port}"
    figures: dict[str, list[tuple[float, float]]] = {"direct": [], "proxied": []}
    try:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            await read_stream(client, gateway + "/events", {"X-Api-Key": key}, events)  # warm up
            for _ in range(rounds):
                figures["direct"].append(await read_stream(client, base + "/events", {}, events))
                figures["proxied"].append(
                    await read_stream(client, gateway + "/events", {"X-Api-Key": key}, events)
                )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    streamed, whole = scan_costs(2000)

    duration = events * spacing * 1000
    print(f"SSE stream: {events} events, {spacing * 1000:.0f} ms apart (~{duration:.0f} ms)")
    print(f"{rounds} rounds each way, medians")
    print(f"{'path':<26}{'first event ms':>16}{'last event ms':>15}")
    medians: dict[str, tuple[float, float]] = {}
    for name, label in (("direct", "direct from upstream"), ("proxied", "through ProxyApp")):
        first = statistics.median(f for f, _ in figures[name])
        last = statistics.median(last for _, last in figures[name])
        medians[name] = (first, last)
        print(f"{label:<26}{first:>16.2f}{last:>15.1f}")
    (p_first, p_last), (d_first, d_last) = medians["proxied"], medians["direct"]
    print(f"time to first event, proxied / direct: {p_first / d_first:.2f}x")
    print(f"first event through the proxy at {p_first / p_last:.1%} of the stream's duration")
    print(f"echo scan per event: {streamed:.1f} us streamed, {whole:.1f} us one whole search")
    baseline = "direct from upstream"
    record(
        [
            Row("streams", "SSE time to first event", p_first, "ms", baseline, d_first, True),
            Row("streams", "SSE time to last event", p_last, "ms", baseline, d_last, True),
            Row(
                "streams",
                "echo scan per SSE event (sliding window)",
                streamed,
                "us",
                "one whole-event search",
                whole,
                True,
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--rounds", type=int, default=10)
    arguments = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", UPSTREAM, str(port), str(arguments.events), str(arguments.spacing)]
    )
    try:
        anyio.run(
            measure,
            f"http://127.0.0.1:{port}",
            arguments.events,
            arguments.spacing,
            arguments.rounds,
        )
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
