"""Telemetry: what a guard needs to emit one OpenTelemetry span and metrics per decision.

Nothing here imports OpenTelemetry until a :class:`Telemetry` is built, and a guard without
one pays a ``None`` check per hook (see ``benchmarks/bench_telemetry.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agentguard._version import __version__
from agentguard.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

    from agentguard._request import GuardRequest
    from agentguard.audit._writer import AuditWriter
    from agentguard.telemetry._decision import DecisionTrace
    from agentguard.telemetry._instruments import Instruments
    from agentguard.telemetry._prometheus import PrometheusReader
    from agentguard.telemetry._spans import DirectSpans

__all__ = ["DecisionObserver", "Telemetry"]

_MISSING = (
    "telemetry needs OpenTelemetry: pip install 'agentguard[otel]' "
    "(opentelemetry-api, opentelemetry-sdk, prometheus-client)"
)


class Telemetry:
    """OpenTelemetry traces and metrics for a :class:`~agentguard.Guard` (``Guard(telemetry=)``).

    One span per decision (``agentguard.decision``) carrying the decision's audit fields,
    parented on the incoming W3C ``traceparent`` (or the span already current), propagated to
    the upstream call a :class:`~agentguard.asgi.ProxyApp` makes; and the decision, latency,
    upstream, reviewer, limit and audit metrics (see ``docs/how-to/telemetry.md``).

    Args:
        tracer_provider: where spans go; by default OpenTelemetry's global provider (a no-op
            until the application sets one).
        meter_provider: where metrics go; by default the global one.
        traces / metrics: turn either half off (``False``).
        prometheus: a :class:`~agentguard.telemetry.PrometheusReader` of ``meter_provider``,
            for whoever serves ``/metrics`` (the gateway); kept here only to be found.

    Raises :class:`~agentguard.errors.ConfigurationError` when OpenTelemetry is not installed.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        traces: bool = True,
        metrics: bool = True,
        prometheus: PrometheusReader | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics as otel_metrics
            from opentelemetry import trace as otel_trace

            from agentguard.telemetry._instruments import Instruments
        except ImportError:
            raise ConfigurationError(_MISSING) from None
        self.tracer: Tracer | None = None
        self.spans: DirectSpans | None = None
        if traces:
            self.tracer = otel_trace.get_tracer("agentguard", __version__, tracer_provider)
            self.spans = _direct(tracer_provider or otel_trace.get_tracer_provider(), self.tracer)
        self.instruments: Instruments | None = None
        if metrics:
            meters = meter_provider or otel_metrics.get_meter_provider()
            meter = otel_metrics.get_meter("agentguard", __version__, meters)
            self.instruments = Instruments(meter, meters)
        self.prometheus = prometheus

    def __repr__(self) -> str:
        return (
            f"Telemetry(traces={self.tracer is not None}, metrics={self.instruments is not None})"
        )

    def observe(self, audit: AuditWriter) -> DecisionObserver:
        """The observer a guard with audit writer ``audit`` calls (the guard does this)."""
        instruments = self.instruments
        if instruments is not None:
            instruments.writers.add(audit)
            audit.observer = _AuditTimer(instruments)
        return DecisionObserver(self, audit.instance)


class DecisionObserver:
    """Starts the :class:`~agentguard.telemetry._decision.DecisionTrace` of each decision."""

    __slots__ = ("_instance", "_instruments", "_spans", "_tracer")

    def __init__(self, telemetry: Telemetry, instance: str | None) -> None:
        self._tracer = telemetry.tracer
        self._spans = telemetry.spans
        self._instruments = telemetry.instruments
        self._instance = instance

    def begin(self, request: GuardRequest) -> DecisionTrace:
        """A trace for the decision about ``request``, started now."""
        from agentguard.telemetry._decision import DecisionTrace

        return DecisionTrace(request, self._tracer, self._instruments, self._instance, self._spans)


class _AuditTimer:
    """Times the audit writer's appends (``AuditWriter.observer``)."""

    __slots__ = ("_histogram",)

    def __init__(self, instruments: Instruments) -> None:
        self._histogram = instruments.audit_append

    def appended(self, started: float, ok: bool) -> None:
        """An append that began at ``started`` (``time.perf_counter``) ended."""
        self._histogram.record(time.perf_counter() - started, ("ok" if ok else "failed",))


def _direct(provider: TracerProvider, tracer: Tracer) -> DirectSpans | None:
    """Direct decision spans when ``provider`` is an SDK provider that allows them."""
    try:
        from agentguard.telemetry._spans import direct
    except ImportError:  # the API without the SDK: spans go through the tracer
        return None
    return direct(provider, tracer)
