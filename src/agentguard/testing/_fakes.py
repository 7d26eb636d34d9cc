"""Fakes for tests: a clock you move by hand."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from agentguard._clock import utc

__all__ = ["FakeClock"]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FakeClock:
    """A :class:`~agentguard.Clock` that only moves when told to.

    Pass the same instance to the store and the guard, then ``advance()`` past an expiry
    instead of sleeping. Safe to share between threads.
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._lock = threading.Lock()
        self._now = utc(start)
        self._monotonic = 1000.0

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def timestamp(self) -> int:
        """The wall clock as whole Unix seconds (what JWT claims such as ``iat`` carry)."""
        return int(self.now().timestamp())

    def advance(self, seconds: float | timedelta) -> None:
        """Move both clocks forward (never backward)."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("a FakeClock only moves forward; use set() to jump")
        with self._lock:
            self._now += delta
            self._monotonic += delta.total_seconds()

    def set(self, moment: datetime) -> None:
        """Jump the wall clock to ``moment`` (the monotonic clock is untouched)."""
        with self._lock:
            self._now = utc(moment)

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
