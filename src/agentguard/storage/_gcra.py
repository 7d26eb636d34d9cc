"""GCRA in whole microseconds: the rate limits' arithmetic, shared by every LimitStore.

:meth:`~agentguard.storage.LimitStore.take` compares instants in whole microseconds. These
helpers are the conversions and the decision every backend makes the same way, so
``retry_after`` agrees to the microsecond across backends and with the conformance suite's
reference model (:func:`agentguard.testing.conformance._limits.gcra_reference`).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from agentguard._clock import utc

__all__ = [
    "MAX_SPAN_US",
    "GcraStep",
    "epoch_micros",
    "gcra",
    "interval_micros",
    "micros",
    "retry_seconds",
]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_UNITS = 2**53
"""Budget costs and limits a :meth:`~agentguard.storage.LimitStore.charge` takes are below
this: exact in an int64 column and in Lua's doubles."""

MAX_SPAN_US = 2**50
"""The longest ``interval * (burst + 1)`` a bucket takes (about 35 years): instants stay exact
in an int64 column and in Lua's doubles (below 2**53) for centuries."""
_MICROSECOND = timedelta(microseconds=1)


class GcraStep(NamedTuple):
    """One decision: whether the call may run, the bucket's ``tat`` after it (unchanged when
    refused; ``None`` for a fresh bucket refused), and the seconds to wait when refused."""

    allowed: bool
    tat: int | None
    retry_after: float


def micros(moment: datetime) -> int:
    """Whole microseconds since the Unix epoch, exactly (no float rounding)."""
    return (utc(moment) - _UNIX_EPOCH) // _MICROSECOND


epoch_micros = micros
"""Another name for :func:`micros`."""


def interval_micros(interval: float, burst: int) -> int:
    """``interval`` seconds in whole microseconds (the nearest), after checking both rate
    parameters: at least one microsecond, and a burst of at least one call."""
    if not math.isfinite(interval):
        raise ValueError("a rate limit's interval must be a finite number of seconds")
    interval_us = round(interval * 1_000_000)
    if interval_us < 1:
        raise ValueError("a rate limit's interval must be at least one microsecond")
    if burst < 1:
        raise ValueError("a rate limit's burst must be at least 1")
    if interval_us * (burst + 1) > MAX_SPAN_US:
        # every backend keeps instants in int64 or Lua doubles: keep them exact
        raise ValueError("a rate limit's burst times its interval must stay within 2**50 µs")
    return interval_us


def retry_seconds(tat: int, now: int, interval: int, burst: int) -> float:
    """Seconds until a call refused at ``now`` (µs) on a bucket at ``tat`` (µs) may run."""
    return (max(tat, now) + interval - now - burst * interval) / 1_000_000


def gcra(tat: int | None, now: int, interval: int, burst: int) -> GcraStep:
    """The :meth:`~agentguard.storage.LimitStore.take` rule on microseconds (``tat`` ``None``
    for a fresh bucket): allowed when ``max(tat, now) + interval - now <= burst * interval``."""
    arrival = max(now if tat is None else tat, now) + interval
    if arrival - now <= burst * interval:
        return GcraStep(True, arrival, 0.0)
    return GcraStep(False, tat, (arrival - now - burst * interval) / 1_000_000)


def check_units(cost: int, limit: int) -> None:
    """Refuse (``ValueError``) a charge no store can hold exactly: a negative cost, or a cost
    or limit of :data:`MAX_UNITS` or more."""
    if cost < 0:
        raise ValueError("a charge's cost must not be negative")
    if cost >= MAX_UNITS or limit >= MAX_UNITS:
        raise ValueError("a charge's cost and limit must stay below 2**53")
