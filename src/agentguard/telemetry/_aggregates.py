"""Metrics aggregated in place on the request path: counters and fixed-bucket histograms.

Recording one measurement is a dict lookup and a few additions under a lock (well under a
microsecond), against the several microseconds of an OpenTelemetry SDK instrument, which
cleans and hashes the attributes of every measurement. OpenTelemetry reads the aggregates when
it collects (see :mod:`agentguard.telemetry._instruments` and
:mod:`agentguard.telemetry._export`).

A series is keyed by a tuple of label values in the order of the metric's ``labels``; a
``None`` value leaves that label out of the series' attributes. Series are capped like the
SDK's cardinality limit: past :data:`MAX_SERIES`, measurements go to one overflow series
(``otel.metric.overflow = true``). A lock (one per metric, or one shared by several metrics,
given to their constructors) makes recording safe from threads (a WSGI adapter) as well as from
the event loop; with a shared lock, a request's measurements can all be made under one
acquisition (the ``*_locked`` methods, called with the lock held).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_SERIES", "HistogramAggregate", "HistogramSeries", "SumAggregate"]

MAX_SERIES = 2000
"""Series per metric before measurements fold into the overflow series (the SDK's default)."""

_OVERFLOW: tuple[Any, ...] = ("__overflow__",)
Key = tuple[Any, ...]


def attributes(labels: Sequence[str], key: Key) -> dict[str, Any]:
    """The attributes of series ``key`` (a ``None`` value leaves its label out)."""
    if key is _OVERFLOW:
        return {"otel.metric.overflow": True}
    return {label: value for label, value in zip(labels, key, strict=True) if value is not None}


class SumAggregate:
    """A monotonic sum per series (a counter)."""

    __slots__ = ("__weakref__", "_lock", "_values", "labels")

    def __init__(self, labels: Sequence[str], lock: threading.Lock | None = None) -> None:
        self.labels = tuple(labels)
        self._values: dict[Key, int] = {}
        self._lock = threading.Lock() if lock is None else lock

    def add(self, key: Key, amount: int = 1) -> None:
        """Add ``amount`` to series ``key``."""
        with self._lock:
            self.add_locked(key, amount)

    def add_locked(self, key: Key, amount: int = 1) -> None:
        """:meth:`add`, the caller holding the aggregate's lock."""
        values = self._values
        value = values.get(key)
        if value is None:
            if len(values) >= MAX_SERIES:
                key = _OVERFLOW
            value = values.get(key, 0)
        values[key] = value + amount

    def snapshot(self) -> list[tuple[dict[str, Any], int]]:
        """Every series now: ``(attributes, cumulative value)``."""
        with self._lock:
            items = list(self._values.items())
        return [(attributes(self.labels, key), value) for key, value in items]


class HistogramSeries:
    """One series of a histogram: bucket counts, sum, count, min, max, and its start time.

    ``count`` is kept in copies only (the sum of the bucket counts, taken by :meth:`copy`):
    recording does not update it."""

    __slots__ = ("count", "counts", "maximum", "minimum", "start_ns", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.count = 0
        self.total = 0.0
        self.minimum = float("inf")
        self.maximum = float("-inf")
        self.start_ns = time.time_ns()

    def copy(self) -> HistogramSeries:
        """A consistent copy (taken under the histogram's lock)."""
        copied = HistogramSeries.__new__(HistogramSeries)
        copied.counts = list(self.counts)
        copied.count, copied.total = sum(self.counts), self.total  # the count: its buckets' sum
        copied.minimum, copied.maximum = self.minimum, self.maximum
        copied.start_ns = self.start_ns
        return copied


class HistogramAggregate:
    """Explicit-bucket histograms per series, with OpenTelemetry's bucket rule: bucket ``i``
    counts the values in ``(bounds[i-1], bounds[i]]``, the last one those above every bound."""

    __slots__ = ("_lock", "_series", "bounds", "labels")

    def __init__(
        self, labels: Sequence[str], bounds: Sequence[float], lock: threading.Lock | None = None
    ) -> None:
        self.labels = tuple(labels)
        self.bounds = tuple(float(bound) for bound in bounds)
        self._series: dict[Key, HistogramSeries] = {}
        self._lock = threading.Lock() if lock is None else lock

    def record(self, value: float, key: Key) -> None:
        """Record ``value`` in series ``key``."""
        with self._lock:
            self.record_locked(value, key)

    def record_locked(self, value: float, key: Key) -> None:
        """:meth:`record`, the caller holding the aggregate's lock."""
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= MAX_SERIES:
                key = _OVERFLOW
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = HistogramSeries(len(self.bounds) + 1)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value
        series.minimum = min(series.minimum, value)
        series.maximum = max(series.maximum, value)

    def snapshot(self) -> list[tuple[dict[str, Any], HistogramSeries]]:
        """Every series now: ``(attributes, a copy of its cumulative state)``."""
        with self._lock:
            items = [(key, series.copy()) for key, series in self._series.items()]
        return [(attributes(self.labels, key), series) for key, series in items]
