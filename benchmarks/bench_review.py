"""Reviewer overhead per KiB of JSON, next to a json.loads + substring-search baseline.

Each built-in reviews the same realistic JSON (CRM-style records with notes, ids, hashes and
a base64 thumbnail) in the same run as the baseline, so the figures compare like with like:

    python benchmarks/bench_review.py [--kib 16] [--rounds 200] [--secrets 20]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
from report import Row, record

from agentguard.review import (
    Direction,
    InjectionScreen,
    ReviewChain,
    ReviewContext,
    SecretLeakReviewer,
)

NOTES = [
    "Called Dana about the renewal; she wants the annual plan and a PO by Friday.",
    "Customer asked us to disregard the earlier quote and send the volume discount.",
    "Installation instructions are in the shared drive; follow the previous section first.",
    "Escalated ticket: invoice rounding differs by 0.01 EUR on multi-currency orders.",
]


def payload(kib: int, rng: random.Random) -> bytes:
    records: list[dict[str, str]] = []
    while len(json.dumps(records)) < kib * 1024:
        records.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "company": f"Company {rng.randint(1, 999)}",
                "note": rng.choice(NOTES),
                "etag": hashlib.sha256(rng.randbytes(16)).hexdigest(),
                "thumb": base64.b64encode(rng.randbytes(96)).decode(),
            }
        )
    return json.dumps(records).encode()


def per_kib(samples: list[float], size: int) -> float:
    return statistics.median(samples) / (size / 1024) * 1e6


async def measure(run: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - start)
    return samples


async def main(kib: int, rounds: int, secrets: int) -> None:
    rng = random.Random(6)
    body = payload(kib, rng)
    text = body.decode()
    values = [f"vendor-live-{rng.randbytes(18).hex()}" for _ in range(secrets)]
    context = ReviewContext(Direction.OUT, "GET", "/contacts", "application/json")

    async def baseline() -> object:
        json.loads(body)
        return [value in text for value in values[:1]]

    leak = SecretLeakReviewer(secrets=values)
    screen = InjectionScreen()
    chain = ReviewChain([leak, screen])
    runs: dict[str, Callable[[], Awaitable[object]]] = {
        "baseline: json.loads + 1 substring search": baseline,
        f"SecretLeakReviewer ({secrets} vault values)": lambda: leak.review(context, text),
        "SecretLeakReviewer (shapes only)": lambda: SHAPES_ONLY.review(context, text),
        "InjectionScreen (default rules)": lambda: screen.review(context, text),
        "ReviewChain (both, bytes in/out)": lambda: chain.review_body(context, body),
    }
    print(f"{len(body) / 1024:.1f} KiB JSON, {rounds} rounds, median per KiB")
    figures: dict[str, float] = {}
    for name, run in runs.items():
        await run()  # warm up (and load indexes)
        figures[name] = per_kib(await measure(run, rounds), len(body))
        print(f"  {name:<44} {figures[name]:8.1f} us/KiB")
    base_name = next(iter(runs))
    record(
        [
            Row("review", name, value, "µs/KiB", base_name, figures[base_name], True)
            for name, value in figures.items()
            if name != base_name
        ]
    )


SHAPES_ONLY = SecretLeakReviewer()

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--secrets", type=int, default=20)
    options = parser.parse_args()
    anyio.run(main, options.kib, options.rounds, options.secrets)
