"""In-memory OpenTelemetry for the telemetry tests: spans, metrics and their plain-text dump."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentguard.telemetry import PrometheusReader, Telemetry

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_ID = 0xB7AD6B7169203331


@dataclass
class Otel:
    """A Telemetry whose spans and metrics stay in memory."""

    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    prometheus: PrometheusReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, data point)`` of metric ``name`` now (cumulative)."""
        data = self.metrics.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found

    def dump(self) -> str:
        """Everything telemetry emitted, as text: span names, attributes, events, statuses,
        metric names and labels, and the Prometheus exposition."""
        parts: list[str] = []
        for span in self.finished():
            parts.append(f"{span.name} {dict(span.attributes or {})!r} {span.status!r}")
            parts += [f"{event.name} {dict(event.attributes or {})!r}" for event in span.events]
        parts.append(self.prometheus.render().decode())
        return "\n".join(parts)


def in_memory(**options: Any) -> Otel:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    prometheus = PrometheusReader()
    meter_provider = MeterProvider(metric_readers=[reader, prometheus])
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        prometheus=prometheus,
        **options,
    )
    return Otel(telemetry, spans, reader, prometheus)
