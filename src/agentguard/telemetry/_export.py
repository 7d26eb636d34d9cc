"""Our histograms, handed to an OpenTelemetry SDK ``MeterProvider``'s readers as data points.

OpenTelemetry's metrics API has no asynchronous histogram, and the Python SDK has no
``MetricProducer`` yet (the specification's way to add pre-aggregated metrics to a reader's
collection). So, for an SDK ``MeterProvider`` whose every reader wants cumulative histograms
(Prometheus; OTLP by default), the histograms are added to each collection the way a
``MetricProducer`` would be: the provider's collect callback (what ``MetricReader.collect``
calls) is wrapped to append one ``Metric`` per histogram, built from our aggregates with the
SDK's own data model (``HistogramDataPoint``, cumulative, in scope ``agentguard``).

When that is not possible (a provider of another SDK, an SDK whose internals moved, a reader
wanting delta temporality), :func:`attach` answers ``False`` and the histograms are recorded
through the SDK's own synchronous instruments instead: slower, never wrong. A reader added to
the provider later that wants delta temporality gets no histograms from us (logged once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from agentguard.telemetry._aggregates import HistogramAggregate

__all__ = ["Described", "attach"]

logger = logging.getLogger("agentguard.telemetry")

Described = tuple[str, str, str, HistogramAggregate]
"""A histogram to export: name, unit, description, aggregate."""
_Collect = Callable[..., "MetricsData | None"]


def _cumulative(reader: Any) -> bool:
    """Whether ``reader`` wants cumulative histograms (its temporality per instrument class)."""
    temporality = getattr(reader, "_instrument_class_temporality", {})
    return any(
        kind.__name__ == "_Histogram" and wanted is AggregationTemporality.CUMULATIVE
        for kind, wanted in temporality.items()
    )


def attach(provider: Any, scope: InstrumentationScope, histograms: Sequence[Described]) -> bool:
    """Add ``histograms`` to every collection of ``provider``'s readers (see the module doc);
    ``False`` when that cannot be done, and nothing was changed."""
    if not isinstance(provider, MeterProvider):
        return False
    consumer = getattr(provider, "_measurement_consumer", None)
    config = getattr(provider, "_sdk_config", None)
    collect = getattr(consumer, "collect", None)
    storages = getattr(consumer, "_reader_storages", None)  # reader -> its storage
    readers = None if storages is None else list(storages)
    resource = getattr(config, "resource", None)
    if consumer is None or collect is None or readers is None or resource is None:
        return False
    if not all(isinstance(r, MetricReader) and _cumulative(r) for r in readers):
        return False
    if not all(hasattr(r, "_set_collect_callback") for r in readers):
        return False
    warned: set[int] = set()

    def collected(reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        data: MetricsData | None = collect(reader, timeout_millis=timeout_millis)
        if not _cumulative(reader):
            if id(reader) not in warned:
                warned.add(id(reader))
                logger.warning("a metric reader wants delta histograms: agentguard's are not sent")
            return data
        metrics = _metrics(histograms)
        return data if not metrics else _merged(data, resource, scope, metrics)

    consumer.collect = collected  # readers the provider adds later get it too
    for reader in readers:
        reader._set_collect_callback(collected)
    return True


def _metrics(histograms: Sequence[Described]) -> list[Metric]:
    now = time.time_ns()
    metrics: list[Metric] = []
    for name, unit, description, aggregate in histograms:
        points = [
            HistogramDataPoint(
                attributes=attributes,
                start_time_unix_nano=series.start_ns,
                time_unix_nano=now,
                count=series.count,
                sum=series.total,
                bucket_counts=series.counts,
                explicit_bounds=aggregate.bounds,
                min=series.minimum,
                max=series.maximum,
                exemplars=[],
            )
            for attributes, series in aggregate.snapshot()
        ]
        if points:
            data = Histogram(points, AggregationTemporality.CUMULATIVE)
            metrics.append(Metric(name, description, unit, data))
    return metrics


def _merged(
    data: MetricsData | None, resource: Any, scope: InstrumentationScope, metrics: list[Metric]
) -> MetricsData:
    """``data`` with ``metrics`` added to scope ``scope`` of the provider's resource."""
    resources = list(data.resource_metrics) if data is not None else []
    for index, found in enumerate(resources):
        if found.resource is not resource and found.resource != resource:
            continue
        scopes = list(found.scope_metrics)
        for place, scoped in enumerate(scopes):
            if scoped.scope == scope:
                scopes[place] = replace(scoped, metrics=[*scoped.metrics, *metrics])
                break
        else:
            scopes.append(ScopeMetrics(scope, metrics, scope.schema_url or ""))
        resources[index] = replace(found, scope_metrics=scopes)
        break
    else:
        resources.append(
            ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], resource.schema_url)
        )
    return MetricsData(resources)
