"""Guard overhead per request over a bare Starlette app, in µs and in CPU instructions.

Issue 17's target: the guard in-process (in-memory store, bearer key, audit append included)
adds at most 20 µs per request to a bare Starlette app measured in the same run.

Two measurements, because a loaded machine makes wall time noisy:

``--wall`` (default)
    Many short rounds, bare and guarded interleaved one round each, so drift hits both alike;
    prints the median of the per-round medians and the overhead (guarded - bare).
``--callgrind``
    Runs each app under ``valgrind --tool=callgrind`` with collection switched on only inside
    the timed loop (the loop runs inside ``operator.call``, and callgrind toggles collection on
    that C function), so imports, set-up and warm-up are excluded. Instruction counts repeat
    to within a fraction of a percent under any load; it prints instructions per request and
    the guard's added instructions, and converts them to µs at the bare app's measured
    instructions-per-µs when ``--wall`` figures are also taken.

    python benchmarks/bench_guard_overhead.py [--rounds 30] [--requests 400] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench_guard import one_request
from callgrind import counted_call, instructions
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.storage import MemoryStore
from agentguard.testing import make_user

App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
TARGET_US = 20.0


async def contacts(request: Request) -> JSONResponse:
    return JSONResponse({"contacts": ["Ada", "Grace"]})


async def timed(app: App, key: str | None, requests: int) -> float:
    """Median µs per request over ``requests`` sequential requests."""
    samples: list[float] = []
    for _ in range(requests):
        started = time.perf_counter_ns()
        await one_request(app, key)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(samples)


async def apps() -> dict[str, tuple[App, str | None]]:
    bare = Starlette(routes=[Route("/crm/contacts", contacts)])
    store = MemoryStore()
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")])
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    guarded = AgentGuardMiddleware(Starlette(routes=[Route("/crm/contacts", contacts)]), guard)
    built: dict[str, tuple[App, str | None]] = {
        "bare": (bare, None),
        "guarded": (guarded, keys.access_key.reveal()),
    }
    for app, key in built.values():
        for _ in range(300):  # warm up
            assert await one_request(app, key) == 200
    return built


async def wall(rounds: int, requests: int) -> dict[str, float]:
    built = await apps()
    medians: dict[str, list[float]] = {name: [] for name in built}
    gc.collect()
    for index in range(rounds):
        order = list(built) if index % 2 == 0 else list(reversed(built))
        for name in order:
            app, key = built[name]
            medians[name].append(await timed(app, key, requests))
    return {name: statistics.median(values) for name, values in medians.items()}


def run_for_callgrind(name: str, requests: int) -> None:
    """Body of one callgrind child: set up, warm up, then the counted loop in operator.call."""
    loop = asyncio.new_event_loop()
    built = loop.run_until_complete(apps())
    app, key = built[name]

    async def counted() -> None:
        for _ in range(requests):
            await one_request(app, key)

    gc.collect()
    gc.disable()  # a collection inside the counted loop would land on whichever app ran it
    counted_call()(loop.run_until_complete, counted())
    gc.enable()


def callgrind(name: str, requests: int) -> int:
    """Instructions for ``requests`` requests of app ``name``, counted in a child process."""
    return instructions(__file__, name, "--requests", requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    parser.add_argument("--no-wall", action="store_true", help="skip the wall-time rounds")
    parser.add_argument("--child", choices=("bare", "guarded"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_for_callgrind(args.child, args.requests)
        return
    bare_us = guarded_us = None
    if not args.no_wall:
        medians = asyncio.run(wall(args.rounds, args.requests))
        bare_us, guarded_us = medians["bare"], medians["guarded"]
        overhead = guarded_us - bare_us
        verdict = "ok" if overhead <= TARGET_US else "MISS"
        print(f"wall time, {args.rounds} interleaved rounds x {args.requests} requests (medians)")
        print(f"  bare Starlette app           {bare_us:8.1f} µs")
        print(f"  AgentGuardMiddleware, memory {guarded_us:8.1f} µs   {guarded_us / bare_us:.2f}x")
        print(f"  overhead                     {overhead:+8.1f} µs   (target <= +{TARGET_US:.0f})"
              f" {verdict}")  # fmt: skip
    if args.callgrind:
        count = 2000
        bare_ir = callgrind("bare", count) / count
        guarded_ir = callgrind("guarded", count) / count
        print(f"callgrind, {count} requests each (instructions per request)")
        print(f"  bare Starlette app           {bare_ir:10.0f}")
        print(f"  AgentGuardMiddleware, memory {guarded_ir:10.0f}   {guarded_ir / bare_ir:.2f}x")
        added = guarded_ir - bare_ir
        line = f"  guard adds                   {added:+10.0f}"
        if bare_us is not None:
            line += f"   ≈ {added * bare_us / bare_ir:+.1f} µs at the bare app's instr/µs"
        print(line)


if __name__ == "__main__":
    main()
