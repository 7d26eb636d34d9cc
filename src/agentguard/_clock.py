"""Time, injected: the only module that reads the wall clock or the monotonic clock.

Every component that needs time takes a :class:`Clock`, so tests advance a fake clock instead of
sleeping, and storage backends (including ones in other processes, like Redis) see one notion of
"now" that the test controls.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "utc"]


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; naive datetimes are refused."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: agentguard only handles timezone-aware times")
    return moment.astimezone(timezone.utc)


@runtime_checkable
class Clock(Protocol):
    """A source of time.

    ``now()`` returns an aware UTC datetime and is used for expiry and audit timestamps;
    ``monotonic()`` returns seconds for measuring durations and cache lifetimes.
    """

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"
