"""Prometheus text exposition of OpenTelemetry metrics: a pull reader and its rendering.

:class:`PrometheusReader` is an OpenTelemetry ``MetricReader`` that collects only when asked
(a scrape), with cumulative temporality, and renders what it collected in the Prometheus text
format (version 0.0.4) through ``prometheus-client``. Names follow the OpenTelemetry-to-
Prometheus rules: dots become underscores, a unit of seconds adds ``_seconds``, counters end in
``_total``; attribute names become label names the same way.

Why ``prometheus-client`` and not ``opentelemetry-exporter-prometheus``: the latter is still a
pre-release (``0.x b0``) that pins one minor version of the SDK (``~=1.45.2``) and itself
depends on ``prometheus-client``; the bridge below is what it does, in 80 lines, without
constraining which SDK the application runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any, cast

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

__all__ = ["CONTENT_TYPE", "PrometheusReader"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_UNIT_SUFFIX = {"s": "_seconds", "ms": "_milliseconds", "By": "_bytes"}
_CUMULATIVE = dict.fromkeys(
    (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    ),
    AggregationTemporality.CUMULATIVE,
)


def _name(name: str, unit: str) -> str:
    cleaned = _INVALID.sub("_", name)
    suffix = _UNIT_SUFFIX.get(unit, "")
    return cleaned if not suffix or cleaned.endswith(suffix) else cleaned + suffix


def _label(name: str) -> str:
    cleaned = _INVALID.sub("_", name).replace(":", "_")
    return "_" + cleaned if cleaned[:1].isdigit() else cleaned


class PrometheusReader(MetricReader):
    """Collects on demand and renders the Prometheus text format.

    Add it to a ``MeterProvider(metric_readers=[reader])`` and serve :meth:`render` (the
    gateway serves it at ``GET /metrics`` on the operator listener).
    """

    def __init__(self) -> None:
        super().__init__(
            preferred_temporality=cast("dict[type, AggregationTemporality]", _CUMULATIVE)
        )
        self._lock = threading.Lock()
        self._collected: MetricsData | None = None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._collected = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release: the reader holds no connection."""

    def render(self) -> bytes:
        """Collect now and render every metric as Prometheus text."""
        from prometheus_client import CollectorRegistry, generate_latest

        with self._lock:
            self._collected = None
            self.collect()
            collected = self._collected
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(collected))
        return generate_latest(registry)


class _Collector:
    """The metric families of one collection, as prometheus-client wants them."""

    def __init__(self, data: MetricsData | None) -> None:
        self._data = data

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        if self._data is None:
            return
        for resource_metrics in self._data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = metric.data
                    points: list[Any] = list(data.data_points)
                    keys = sorted({key for point in points for key in point.attributes})
                    labels = [_label(key) for key in keys]
                    name = _name(metric.name, metric.unit or "")
                    text = metric.description or metric.name

                    def values(point: Any, keys: list[str] = keys) -> list[str]:
                        return [str(point.attributes.get(key, "")) for key in keys]

                    family: Any
                    if isinstance(data, HistogramData):
                        family = HistogramMetricFamily(name, text, labels=labels)
                        for point in points:
                            running = 0
                            buckets: list[tuple[str, float]] = []
                            for bound, count in zip(
                                point.explicit_bounds, point.bucket_counts, strict=False
                            ):
                                running += count
                                buckets.append((repr(float(bound)), running))
                            buckets.append(("+Inf", point.count))
                            family.add_metric(values(point), buckets, point.sum)
                    elif isinstance(data, Sum) and data.is_monotonic:
                        family = CounterMetricFamily(name, text, labels=labels)
                        for point in points:
                            family.add_metric(values(point), point.value)
                    elif isinstance(data, (Sum, Gauge)):
                        family = GaugeMetricFamily(name, text, labels=labels)
                        for point in points:
                            family.add_metric(values(point), point.value)
                    else:  # pragma: no cover - an aggregation we do not create
                        continue
                    yield family
