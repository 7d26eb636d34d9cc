from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agentguard._clock import Clock, SystemClock, utc
from agentguard.testing import FakeClock


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    start, mono = clock.now(), clock.monotonic()
    assert clock.now() == start
    clock.advance(90)
    assert clock.now() - start == timedelta(seconds=90)
    assert clock.monotonic() - mono == 90
    clock.advance(timedelta(minutes=1))
    assert clock.now() - start == timedelta(seconds=150)


def test_fake_clock_refuses_going_back_and_naive_times() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(datetime(2026, 1, 1))
    clock.set(datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert clock.now().year == 2030


def test_clocks_satisfy_the_protocol() -> None:
    assert isinstance(FakeClock(), Clock)
    assert isinstance(SystemClock(), Clock)
    assert SystemClock().now().tzinfo is timezone.utc


def test_utc_normalises() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert utc(datetime(2026, 1, 1, 12, tzinfo=plus_two)) == datetime(
        2026, 1, 1, 10, tzinfo=timezone.utc
    )
