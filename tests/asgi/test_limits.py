"""CallerSlots: each caller's share of a service's upstream connections."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.asgi._limits import CallerSlots
from agentguard.errors import TooManyRequests


@given(
    limit=st.integers(min_value=1, max_value=4),
    steps=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=40),
)
def test_slots_match_a_counting_model(limit: int, steps: list[tuple[str, bool]]) -> None:
    slots = CallerSlots(limit)
    held: dict[str, list[Callable[[], None]]] = {"a": [], "b": [], "c": []}
    for caller, take in steps:
        if take:
            if len(held[caller]) >= limit:
                with pytest.raises(TooManyRequests) as refused:
                    slots.acquire(caller)
                assert refused.value.status == 429
                assert ("retry-after", "1") in refused.value.response_headers()
            else:
                held[caller].append(slots.acquire(caller))
        elif held[caller]:
            release = held[caller].pop(0)
            release()
            release()  # idempotent: a second release frees nothing more
        for name, releases in held.items():
            assert slots.in_flight(name) == len(releases)


def test_a_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CallerSlots(0)
