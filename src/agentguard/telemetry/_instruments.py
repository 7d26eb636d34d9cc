"""The metrics of one :class:`~agentguard.telemetry.Telemetry`: aggregated here, read by
OpenTelemetry when it collects.

Counters are :mod:`~agentguard.telemetry._aggregates` sums published through observable
counters (the API's own way to report a sum kept elsewhere: any SDK, either temporality).
Histograms are aggregated here too and added to an SDK provider's collections
(:mod:`agentguard.telemetry._export`), or, when that is not possible, recorded through the
SDK's synchronous histograms. The request path calls ``add(key)`` / ``record(value, key)``
with a tuple of label values (see :mod:`~agentguard.telemetry._aggregates`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from agentguard.telemetry import _names as names
from agentguard.telemetry._aggregates import HistogramAggregate, SumAggregate, attributes

if TYPE_CHECKING:
    from agentguard.audit._writer import AuditWriter

__all__ = ["Instruments"]

Key = tuple[Any, ...]
Measured = tuple[float, Key]
"""A histogram measurement: value, series key."""

DECISION_LABELS = ("decision", "service", "reason")
LIMIT_LABELS = ("limit", "service")
VERDICT_LABELS = ("direction", "reviewer", "outcome", "reason")
DURATION_LABELS = ("decision", "service")
UPSTREAM_LABELS = ("service", "status", "error")
APPEND_LABELS = ("outcome",)


class Recorder(Protocol):
    """Where a histogram's measurements go."""

    def record(self, value: float, key: tuple[Any, ...]) -> None: ...


class _SdkHistogram:
    """A histogram recorded through the SDK's instrument (when ours cannot be exported)."""

    __slots__ = ("_instrument", "_labels")

    def __init__(self, meter: Meter, name: str, labels: Sequence[str]) -> None:
        self._labels = tuple(labels)
        self._instrument = meter.create_histogram(
            name,
            unit="s",
            description=names.METRICS[name][2],
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )

    def record(self, value: float, key: tuple[Any, ...]) -> None:
        self._instrument.record(value, attributes(self._labels, key))


def _observed(aggregate: SumAggregate) -> Callable[[CallbackOptions], Iterable[Observation]]:
    owner = weakref.ref(aggregate)  # the meter keeps the callback: it must not keep us alive

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        found = owner()
        if found is None:
            return []
        return [Observation(value, labels) for labels, value in found.snapshot()]

    return observe


class Instruments:
    """Counters, histograms and the audit queue gauge, created once per meter."""

    __slots__ = (
        "__weakref__",
        "_histograms",
        "aggregated",
        "audit_append",
        "decision_duration",
        "decisions",
        "limit_refusals",
        "lock",
        "upstream_duration",
        "verdicts",
        "writers",
    )

    def __init__(self, meter: Meter, provider: MeterProvider | None = None) -> None:
        self.lock = threading.Lock()  # one for every aggregate: a request's, taken once
        self.decisions = SumAggregate(DECISION_LABELS, self.lock)
        self.limit_refusals = SumAggregate(LIMIT_LABELS, self.lock)
        self.verdicts = SumAggregate(VERDICT_LABELS, self.lock)
        for name, unit, aggregate in (
            (names.DECISIONS, "{decision}", self.decisions),
            (names.LIMIT_REFUSALS, "{refusal}", self.limit_refusals),
            (names.REVIEW_VERDICTS, "{verdict}", self.verdicts),
        ):
            meter.create_observable_counter(
                name,
                callbacks=[_observed(aggregate)],
                unit=unit,
                description=names.METRICS[name][2],
            )
        histograms = (
            (names.DECISION_DURATION, DURATION_LABELS),
            (names.UPSTREAM_DURATION, UPSTREAM_LABELS),
            (names.AUDIT_APPEND_DURATION, APPEND_LABELS),
        )
        aggregates = [
            (
                name,
                "s",
                names.METRICS[name][2],
                HistogramAggregate(labels, names.DURATION_BUCKETS, self.lock),
            )
            for name, labels in histograms
        ]
        self.aggregated = _attach(provider, meter, aggregates)
        self._histograms = (aggregates[0][3], aggregates[1][3]) if self.aggregated else None
        recorders: list[Recorder] = (
            [aggregate for *_, aggregate in aggregates]
            if self.aggregated
            else [_SdkHistogram(meter, name, labels) for name, labels in histograms]
        )
        self.decision_duration, self.upstream_duration, self.audit_append = recorders
        self.writers: weakref.WeakSet[AuditWriter] = weakref.WeakSet()
        owner = weakref.ref(self)

        def pending(options: CallbackOptions) -> Iterable[Observation]:
            instruments = owner()
            if instruments is None:
                return []
            return [
                Observation(writer.pending, {"instance": writer.instance or ""})
                for writer in list(instruments.writers)
            ]

        meter.create_observable_gauge(
            names.AUDIT_PENDING,
            callbacks=[pending],
            unit="{event}",
            description=names.METRICS[names.AUDIT_PENDING][2],
        )

    def decided(
        self,
        decision: Key | None,
        limit: Key | None,
        duration: Measured | None,
        upstream: Measured | None,
    ) -> None:
        """One request's measurements: the decision and limit refusal counted (series keys),
        the decision's and the upstream's durations recorded; under one acquisition of the lock
        when the histograms are ours."""
        histograms = self._histograms
        if histograms is None:
            if decision is not None:
                self.decisions.add(decision)
            if limit is not None:
                self.limit_refusals.add(limit)
            if duration is not None:
                self.decision_duration.record(*duration)
            if upstream is not None:
                self.upstream_duration.record(*upstream)
            return
        with self.lock:
            if decision is not None:
                self.decisions.add_locked(decision)
            if limit is not None:
                self.limit_refusals.add_locked(limit)
            if duration is not None:
                histograms[0].record_locked(*duration)
            if upstream is not None:
                histograms[1].record_locked(*upstream)


def _attach(
    provider: MeterProvider | None,
    meter: Meter,
    aggregates: list[tuple[str, str, str, HistogramAggregate]],
) -> bool:
    """Whether our histograms are exported to ``provider``'s readers (an SDK provider)."""
    if provider is None:
        return False
    try:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from agentguard.telemetry._export import attach
    except ImportError:  # the API without the SDK: the histograms go through the API
        return False
    scope = getattr(meter, "_instrumentation_scope", None)
    if not isinstance(scope, InstrumentationScope):
        return False
    return attach(provider, scope, aggregates)
