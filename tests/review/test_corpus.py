"""Each built-in against the positive and negative corpus; false positives are counted."""

from __future__ import annotations

import pytest

from agentguard.review import Direction, InjectionScreen, ReviewContext, SecretLeakReviewer
from tests.review.corpus import load

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("row", load("secrets_positive"), ids=lambda row: row["shape"])
async def test_secret_shapes_are_blocked(row: dict[str, str]) -> None:
    verdict = await SecretLeakReviewer().review(ReviewContext(Direction.IN), row["text"])
    assert verdict.outcome == "block"
    assert verdict.reason == f"{row['shape']}_in_body"


async def test_secret_leak_false_positives_on_negative_corpus(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reviewer = SecretLeakReviewer(secrets=["crm-live-0123456789abcdefghij"])
    rows = load("secrets_negative") + load("injection_negative")
    flagged = []
    for row in rows:
        for direction in Direction:
            verdict = await reviewer.review(ReviewContext(direction), row["text"])
            if not verdict.allowed:
                flagged.append(row["text"][:60])
    with capsys.disabled():
        print(f"\nSecretLeakReviewer: {len(flagged)} false positives in {2 * len(rows)} reviews")
    assert flagged == []


@pytest.mark.parametrize("row", load("injection_positive"), ids=lambda row: row["text"][:30])
async def test_injection_positives_reach_the_threshold(row: dict[str, str]) -> None:
    screen = InjectionScreen()
    context = ReviewContext(Direction(row["direction"]))
    score, ids = screen.score(context, row["text"])
    assert score >= screen.threshold, ids
    assert (await screen.review(context, row["text"])).outcome == "block"


async def test_injection_false_positives_on_negative_corpus(
    capsys: pytest.CaptureFixture[str],
) -> None:
    screen = InjectionScreen()
    rows = load("injection_negative") + [
        {"direction": d, "text": row["text"]}
        for row in load("secrets_negative")
        for d in ("in", "out")
    ]
    flagged = []
    for row in rows:
        verdict = await screen.review(ReviewContext(Direction(row["direction"])), row["text"])
        if not verdict.allowed:
            flagged.append((verdict.reason, row["text"][:60]))
    with capsys.disabled():
        print(f"\nInjectionScreen: {len(flagged)} false positives in {len(rows)} reviews")
    assert flagged == []
