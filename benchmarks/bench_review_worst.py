"""Reviewer worst case: every built-in rule over generated adversarial 1 MiB bodies.

For each built-in reviewer, the worst µs/KiB over bodies built to make its rules work hardest
(each rule's prefix repeated, long runs of the characters its quantifiers accept, near-miss
shapes) is reported next to the typical µs/KiB on the reviewer benchmark's realistic JSON
(``bench_review.payload``), measured in the same run; the target is worst <= 5x typical.

Then responsiveness: uvicorn on loopback serves an app whose chain reviews request bodies; from
another process, a trivial request is sent every 2 ms while a 1 MiB adversarial body is under
review by the same event loop. The worst latency is reported next to the same request's latency
on an idle server (target: answered within 50 ms).

    python benchmarks/bench_review_worst.py [--mib 1] [--rounds 3] [--only NAME]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx
import uvicorn
from bench_review import payload
from report import Row, record
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from agentguard.review import (
    SHAPES,
    Direction,
    InjectionScreen,
    ReviewChain,
    ReviewContext,
    SecretLeakReviewer,
)

MIB = 1024 * 1024
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def fill(unit: str, size: int) -> str:
    """``unit`` repeated to ``size`` characters."""
    return (unit * (size // max(len(unit), 1) + 1))[:size]


def secret_bodies(size: int, rng: random.Random) -> dict[str, str]:
    """Bodies that make each credential shape (and the exact-match scan) work hardest."""
    token = "".join(rng.choice(_ALNUM) for _ in range(36))
    return {
        "pem header repeated": fill("-----BEGIN RSA PRIVATE KEY-----\n", size),
        "pem header, long label": "-----BEGIN " + fill("AB ", size - 40) + "PRIVATE KEY-----",
        "pem header then armour, no footer": "-----BEGIN RSA PRIVATE KEY-----\n"
        + fill("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC+/=\n", size - 40),
        "pem footers of other labels": fill(
            "-----BEGIN A PRIVATE KEY-----\nQUJD\n-----END B PRIVATE KEY-----\n", size
        ),
        "pem labels all different": "".join(
            f"-----BEGIN K{n} PRIVATE KEY-----\n" for n in range(size // 30)
        )[:size],
        "aws shape repeated": fill("AKIA" + "ABCDEFGHIJKLMNOP" + " ", size),
        "aws prefix run": fill("AKIA", size),
        "github token near miss": fill("ghp_" + token + " ", size),
        "github_pat prefix run": fill("github_pat_", size),
        "google prefix then run": "AIza" + fill("a-", size - 4),
        "stripe over-long key": fill("sk_live_" + "a" * 120 + " ", size),
        "agentguard prefix run": fill("ag_at_", size),
        "jwt prefix run": fill("eyJ", size),
        "jwt near miss": fill("eyJhbGciOi.eyJzdWIiOi.", size),
        "jwt long final part": "eyJhbGciOiJI.eyJzdWIiOiIx." + "a" * (size - 30),
        "base62 run": fill(_ALNUM, size),
    }


MARKERS = "a\x00b\nc\\u0041%41d\\/"
"""Every view marker of the exact-value matcher (NUL, line break, JSON and percent escapes)."""


def vault_bodies(size: int) -> dict[str, str]:
    """Bodies that make the exact-value matcher build and search every view (issue 14 F5)."""
    return {
        "every view marker": fill(MARKERS, size),
        "plain ascii words": fill("abcdefghij ", size),
        "escapes only": fill("\\u0041", size),
        "percent-encoded escapes": fill("%5Cu0041", size),
        "spaced base64 groups": fill("QUJD RA== ", size),
    }


def vault_values(count: int, rng: random.Random) -> list[str]:
    """``count`` credential values of the shape vendors use."""
    return [f"vendor-live-{rng.randbytes(18).hex()}" for _ in range(count)]


def injection_bodies(size: int) -> dict[str, str]:
    """Bodies that make each injection rule work hardest (the issue's cases first)."""
    units = {
        "html comment open repeated": "<!--",
        "html comment open + keyword": "<!-- ai ",
        "html comment dashes": "<!--" + "-" * 64,
        "comment close repeated": "-->",
        "tag open, no close": "<a ",
        "tag open repeated": "<a",
        "tag with on-prefix attrs": "<a ona onb onc ",
        "ignore + filler": "ignore ,'- ",
        "ignore previous repeated": "ignore previous ",
        "all previous repeated": "all of the previous ",
        "whitespace run": " \t",
        "hash run": "#",
        "role prefix near miss": "system message : \n",
        "send all repeated": "send all the ",
        "you are now repeated": "you are now ",
        "script spaced": "j a v a s c r i p t ",
        "script url near miss": "=' javascript",
        "css near miss": "opacity : 0.000",
        "data url near miss": "data : text/",
        "element near miss": "< iframe",
        "zero-width run": "a\u200b",
        "tag characters near miss": "\U000e0041" * 7 + "x",
        "bidi + letters": "\u202ex",
        "homoglyphs": "\u0456gn\u043ere ",
        "fullwidth": "\uff49\uff47\uff4e\uff4f\uff52\uff45 ",
        "json escapes": "\\u0041",
        "letters run": "ab",
    }
    return {name: fill(unit, size) for name, unit in units.items()}


async def per_kib(run: Callable[[], Awaitable[object]], size: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) / (size / 1024) * 1e6


async def worst_case(  # noqa: PLR0917 - a private helper of this script
    name: str,
    review: Callable[[ReviewContext, str], Awaitable[object]],
    contexts: list[ReviewContext],
    bodies: dict[str, str],
    typical: float,
    rounds: int,
    size: int,
) -> Row:
    worst, worst_body = 0.0, ""
    for label, body in bodies.items():
        for context in contexts:
            figure = await per_kib(lambda: review(context, body), len(body), rounds)  # noqa: B023
            print(f"    {label:<38} {context.content_type or '-':<18} {figure:9.1f} us/KiB")
            if figure > worst:
                worst, worst_body = figure, label
    ratio = worst / typical if typical else float("nan")
    print(f"  {name}: worst {worst:.1f} us/KiB ({worst_body}), typical {typical:.1f}: {ratio:.2f}x")
    return Row("review", f"{name} worst case", worst, "µs/KiB", f"{name} typical", typical, True)


async def typical_case(
    review: Callable[[ReviewContext, str], Awaitable[object]], rounds: int
) -> float:
    body = payload(64, random.Random(6)).decode()
    context = ReviewContext(Direction.OUT, "GET", "/contacts", "application/json")
    await review(context, body)
    return await per_kib(lambda: review(context, body), len(body), rounds * 20)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinger(port: int, ready: Any, stop: Any, results: Any) -> None:
    """In its own process (so it never waits for the server's interpreter lock): idle ping
    latency, then a ping every 2 ms until ``stop`` is set."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as pinger:

        def ping() -> float:
            start = time.perf_counter()
            response = pinger.get("/ping")
            assert response.text == "pong"
            return (time.perf_counter() - start) * 1000

        idle = statistics.median([ping() for _ in range(100)])
        ready.set()
        busy: list[float] = []
        while not stop.is_set():
            busy.append(ping())
            time.sleep(0.002)
    results.put((idle, busy))


def _drive(port: int, adversarial: bytes, rounds: int, expected: str) -> tuple[float, list[float]]:
    """Idle ping latency, then ping latencies while ``rounds`` reviews run one after another.

    The pinger is another process: a client thread in the server's process would wait for the
    interpreter lock that the review holds between its checkpoints, and measure that instead
    of the event loop.
    """
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    pinger = context.Process(target=_pinger, args=(port, ready, stop, results))
    pinger.start()
    try:
        assert ready.wait(60), "the pinger did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as heavy:
            for _ in range(rounds):
                outcome = heavy.post("/review", content=adversarial).text
                assert outcome == expected, outcome
        stop.set()
        idle, busy = results.get(timeout=60)
    finally:
        stop.set()
        pinger.join(60)
    return float(idle), list(busy)


async def responsiveness(
    size: int, rounds: int, chain: ReviewChain, adversarial: str, *, label: str, expected: str
) -> tuple[float, float]:
    """Latency (ms) of a trivial request over a real socket: idle, and at worst while a 1 MiB
    adversarial body is reviewed by the same server (one event loop)."""

    async def review(request: Request) -> PlainTextResponse:
        body = await request.body()
        context = ReviewContext(Direction.IN, request.method, "/", "text/plain")
        result = await chain.review_body(context, body)
        return PlainTextResponse("blocked" if result.blocked else "ok")

    async def ping(_: Request) -> PlainTextResponse:
        return PlainTextResponse("pong")

    app = Starlette(routes=[Route("/review", review, methods=["POST"]), Route("/ping", ping)])
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await anyio.sleep(0.01)
        idle, busy = await anyio.to_thread.run_sync(
            _drive, port, adversarial.encode(), rounds, expected
        )
        server.should_exit = True
    worst = max(busy)
    print(
        f"  trivial request: idle {idle:.2f} ms; during a {size / MIB:.2f} MiB {label} review "
        f"max {worst:.2f} ms, median {statistics.median(busy):.2f} ms over {len(busy)} requests"
    )
    return idle, worst


async def main(mib: float, rounds: int, only: str | None) -> None:
    size = int(mib * MIB)
    rng = random.Random(14)
    leak = SecretLeakReviewer(secrets=vault_values(20, rng))
    screen = InjectionScreen()
    plain = [ReviewContext(Direction.IN, "POST", "/x", ""), ReviewContext(Direction.OUT)]
    json_context = [ReviewContext(Direction.OUT, "GET", "/x", "application/json")]
    rows: list[Row] = []
    print(f"{size / MIB:.1f} MiB adversarial bodies, {rounds} rounds, median per KiB")
    if only in (None, "secrets"):
        typical = await typical_case(leak.review, rounds)
        bodies = secret_bodies(size, rng)
        assert set(SHAPES) <= {
            "agentguard_key",
            "github_token",
            "github_pat",
            "aws_access_key",
            "google_api_key",
            "stripe_live_key",
            "private_key",
            "jwt",
        }
        rows.append(
            await worst_case(
                "SecretLeakReviewer", leak.review, plain[:1], bodies, typical, rounds, size
            )
        )
    if only in (None, "secrets", "vault"):
        for count in (20, 200):
            vault = SecretLeakReviewer(secrets=vault_values(count, rng))
            typical = await typical_case(vault.review, rounds)
            rows.append(
                await worst_case(
                    f"SecretLeakReviewer ({count} vault values)",
                    vault.review,
                    plain[:1],
                    vault_bodies(size),
                    typical,
                    rounds,
                    size,
                )
            )
    if only in (None, "injection"):
        typical = await typical_case(screen.review, rounds)
        bodies = injection_bodies(size)
        json_bodies = {"json string of '<!--'": '["' + fill("<!--", size - 4) + '"]'}
        rows.append(
            await worst_case("InjectionScreen", screen.review, plain, bodies, typical, rounds, size)
        )
        rows.append(
            await worst_case(
                "InjectionScreen (JSON)",
                screen.review,
                json_context,
                json_bodies,
                typical,
                rounds,
                size,
            )
        )
    if only in (None, "latency"):
        chains = {
            "adversarial": (
                ReviewChain([SecretLeakReviewer(), InjectionScreen()], max_bytes=size + 1024),
                fill("-----BEGIN RSA PRIVATE KEY-----\n", size // 2) + fill("<!--", size // 2),
                "blocked",
            ),
            "view-marker (200 vault values)": (
                ReviewChain(
                    [SecretLeakReviewer(secrets=vault_values(200, rng))], max_bytes=size + 1024
                ),
                fill(MARKERS, size),
                "ok",
            ),
        }
        for label, (chain, body, expected) in chains.items():
            idle, busy = await responsiveness(
                size, max(rounds, 3), chain, body, label=label, expected=expected
            )
            during = f"trivial request during a 1 MiB {label} review"
            rows.append(Row("review", during, busy, "ms", "trivial request, idle", idle, True))
            rows.append(Row("review", f"{during} (budget)", busy, "ms", "50 ms budget", 50.0, True))
    record(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["secrets", "vault", "injection", "latency"])
    options = parser.parse_args()
    anyio.run(main, options.mib, options.rounds, options.only)
