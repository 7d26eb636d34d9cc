"""Issue 14 F5: the secret-leak reviewer's exact-value search is stepwise and bounded.

A 1 MiB body carrying every view marker (NUL, line break, JSON and percent escapes), reviewed
against 200 vault values: the review hands the event loop back many times (a concurrent task
runs between steps of view building and slice matching), and a deadline injected through the
step's clock blocks the body mid-search (fail closed). No timings here: speed is measured in
benchmarks/bench_review_worst.py.
"""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from agentguard.review import (
    Direction,
    Outcome,
    ReviewChain,
    ReviewContext,
    ReviewStep,
    SecretLeakReviewer,
    Verdict,
)

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024
MARKERS = "a\x00b\nc\\u0041%41d\\/"
BODY = (MARKERS * (MIB // len(MARKERS) + 1))[:MIB]
IN = ReviewContext(Direction.IN, "POST", "/notes", "text/plain")
_RNG = random.Random(14)
VALUES = [f"vendor-live-{_RNG.randbytes(18).hex()}" for _ in range(200)]


def _reviewer() -> SecretLeakReviewer:
    # Shapes off: only the exact-value matcher runs, so every pause counted is its own.
    return SecretLeakReviewer(secrets=VALUES, shapes={})


async def _ticks_during(
    reviewer: SecretLeakReviewer, body: str, context: ReviewContext = IN
) -> tuple[int, Verdict]:
    ticks = 0
    done = anyio.Event()
    result: list[Verdict] = []

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            ticks += 1

    async def reviewing() -> None:
        await anyio.lowlevel.checkpoint()
        result.append(await reviewer.review(context, body))
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        group.start_soon(reviewing)
    return ticks, result[0]


async def test_a_one_mib_adversarial_review_yields_to_the_loop_many_times() -> None:
    ticks, verdict = await _ticks_during(_reviewer(), BODY)
    assert verdict.outcome is Outcome.ALLOW
    # 1 MiB in steps of 64 KiB (or 2048 escapes) per view: well over a hundred steps.
    assert ticks >= 100


async def test_a_value_hidden_at_the_end_of_the_adversarial_body_is_still_found() -> None:
    hidden = "".join(f"%{byte:02X}" for byte in VALUES[-1].encode())
    ticks, verdict = await _ticks_during(_reviewer(), BODY + "\\u0020" + hidden)
    assert (verdict.outcome, verdict.reason) == (Outcome.BLOCK, "credential_in_body")
    assert ticks >= 10


async def test_the_split_across_fields_search_is_stepwise_too() -> None:
    unit = MARKERS.replace("\x00", "").replace("\n", " ")  # valid inside a JSON string
    field = unit * (4096 // len(unit))
    body = "[" + ",".join(f'"{field}"' for _ in range(MIB // 4 // len(field))) + "]"
    context = ReviewContext(Direction.OUT, "GET", "/x", "application/json")
    reviewer = _reviewer()
    secret = VALUES[7]
    # Three pieces: none holds a leading or trailing fragment of 12 characters.
    split = body[:-1] + f',"{secret[:11]}","{secret[11:-11]}","{secret[-11:]}"]'
    ticks, verdict = await _ticks_during(reviewer, split, context)
    assert (verdict.outcome, verdict.reason) == (Outcome.BLOCK, "credential_split_across_fields")
    assert ticks >= 20  # the whole-body search, then the search of the joined fields


class SteppingClock:
    """A clock that jumps ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        self.reads += 1
        return value


async def test_a_jumping_clock_deadline_fires_during_the_exact_value_search() -> None:
    clock = SteppingClock(0.1)
    step = ReviewStep(_reviewer(), timeout=2.0, clock=clock)
    result = await ReviewChain([step], max_bytes=2 * MIB).review_body(IN, BODY.encode())
    assert result.blocked is not None
    assert (result.blocked.outcome, result.blocked.reason) == (Outcome.BLOCK, "reviewer_timeout")
    # Cut at the first checkpoint after 2 s of clock: about 20 reads, not one per step.
    assert clock.reads < 40
