"""The fast paths of telemetry, checked against the SDK's own: decision spans made without the
SDK's span object (exported through a batch processor and encoded as OTLP), and histograms
aggregated by us (compared with the SDK's histogram fed the same values)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.metrics import get_meter
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.storage import MemoryStore
from agentguard.telemetry import Telemetry
from agentguard.telemetry._aggregates import HistogramAggregate
from agentguard.telemetry._export import attach
from agentguard.telemetry._names import DURATION_BUCKETS
from agentguard.testing import FakeClock, make_user
from tests.telemetry.support import PARENT_ID, TRACE_ID, TRACEPARENT

pytestmark = pytest.mark.anyio


class _Starts(SpanProcessor):
    """A processor that looks at started spans: the SDK's own span path must be used."""

    def __init__(self) -> None:
        self.started = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started += 1


async def _one_call(telemetry: Telemetry, headers: dict[str, str]) -> int:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/crm", "crm")], clock=clock, telemetry=telemetry)
    await make_user(store, user_id="alice", grants="crm:read")
    key = (await guard.issuer.issue("alice", "ws-1")).access_key.reveal()

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = AgentGuardMiddleware(Starlette(routes=[Route("/crm/contacts", ok)]), guard)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        sent = await client.get(
            "/crm/contacts", headers={"authorization": f"Bearer {key}", **headers}
        )
    return sent.status_code


def _provider(*processors: SpanProcessor, **options: Any) -> TracerProvider:
    provider = TracerProvider(**options)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _shape(span: ReadableSpan) -> dict[str, Any]:
    """What two paths must agree on (ids and times differ per span)."""
    attributes = dict(span.attributes or {})
    for varying in ("agentguard.decision_id", "agentguard.key_id", "agentguard.family_id"):
        assert isinstance(attributes.pop(varying), str)
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": attributes,
        "status": span.status.status_code,
        "trace_id": span.context.trace_id,
        "flags": int(span.context.trace_flags),
        "parent": None if span.parent is None else (span.parent.span_id, span.parent.is_remote),
        "scope": span.instrumentation_scope,
        "resource": span.resource,
    }


async def test_a_batched_direct_span_matches_the_sdk_span_and_encodes_as_otlp() -> None:
    batched = InMemorySpanExporter()
    direct = Telemetry(tracer_provider=_provider(BatchSpanProcessor(batched)), metrics=False)
    assert direct.spans is not None  # the direct path is the one under test
    starts = _Starts()
    reference = InMemorySpanExporter()
    sdk = Telemetry(
        tracer_provider=_provider(starts, SimpleSpanProcessor(reference)), metrics=False
    )
    for telemetry in (direct, sdk):
        assert await _one_call(telemetry, {"traceparent": TRACEPARENT}) == 200
    assert starts.started == 1  # the SDK path ran for the provider with an on_start hook
    (span,) = _flushed(direct, batched)
    (expected,) = reference.get_finished_spans()
    assert _shape(span) == _shape(expected)
    assert span.context.trace_id == TRACE_ID and span.parent is not None
    assert span.parent.span_id == PARENT_ID and span.context.span_id != PARENT_ID
    assert span.start_time is not None and span.end_time is not None
    assert 0 < span.start_time <= span.end_time

    encoder = pytest.importorskip("opentelemetry.exporter.otlp.proto.common.trace_encoder")
    request = encoder.encode_spans([span])
    (encoded,) = request.resource_spans[0].scope_spans[0].spans
    assert request.resource_spans[0].scope_spans[0].scope.name == "agentguard"
    assert encoded.trace_id == TRACE_ID.to_bytes(16, "big")
    assert encoded.span_id == span.context.span_id.to_bytes(8, "big")
    assert encoded.parent_span_id == PARENT_ID.to_bytes(8, "big")
    assert (encoded.start_time_unix_nano, encoded.end_time_unix_nano) == (
        span.start_time, span.end_time,
    )  # fmt: skip
    decoded = {item.key: item.value for item in encoded.attributes}
    assert decoded["agentguard.decision"].string_value == "allow"
    assert decoded["http.response.status_code"].int_value == 200
    assert set(decoded) == set(span.attributes or {})


def _flushed(telemetry: Telemetry, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert telemetry.spans is not None
    processors = telemetry.spans._processors  # the provider's: flush what the batch holds
    assert processors.force_flush(10_000)
    return list(exporter.get_finished_spans())


async def test_the_provider_sampler_decides_on_the_direct_path() -> None:
    exporter = InMemorySpanExporter()
    off = Telemetry(
        tracer_provider=_provider(SimpleSpanProcessor(exporter), sampler=ALWAYS_OFF), metrics=False
    )
    assert off.spans is not None
    assert await _one_call(off, {}) == 200
    follows = Telemetry(
        tracer_provider=_provider(SimpleSpanProcessor(exporter), sampler=ParentBased(ALWAYS_OFF)),
        metrics=False,
    )
    unsampled_parent = TRACEPARENT[:-2] + "00"
    assert await _one_call(follows, {"traceparent": unsampled_parent}) == 200
    assert exporter.get_finished_spans() == ()  # neither sampled: nothing exported
    assert await _one_call(follows, {"traceparent": TRACEPARENT}) == 200  # a sampled parent
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_flags.sampled and span.parent is not None


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:  # nothing recorded yet
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


durations = st.one_of(
    st.sampled_from(DURATION_BUCKETS),  # on a bound: the bucket below (bounds are inclusive)
    st.floats(0, 60, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(durations, st.sampled_from(["ok", "failed"])), max_size=40))
def test_our_histogram_exports_what_the_sdk_histogram_would(
    values: list[tuple[float, str]],
) -> None:
    ours = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[ours])
    scope = InstrumentationScope("agentguard", "1")
    aggregate = HistogramAggregate(("outcome",), DURATION_BUCKETS)
    assert attach(provider, scope, [("h", "s", "test", aggregate)])
    theirs = InMemoryMetricReader()
    sdk = get_meter("agentguard", "1", MeterProvider(metric_readers=[theirs])).create_histogram(
        "h", unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)
    )
    for value, outcome in values:
        aggregate.record(value, (outcome,))
        sdk.record(value, {"outcome": outcome})
    for _ in range(2):  # cumulative: the second collection repeats the first
        found = {tuple(p.attributes.items()): p for p in _points(ours, "h")}
        expected = {tuple(p.attributes.items()): p for p in _points(theirs, "h")}
        assert found.keys() == expected.keys()
        for series, point in found.items():
            other = expected[series]
            assert list(point.bucket_counts) == list(other.bucket_counts)
            assert list(point.explicit_bounds) == list(other.explicit_bounds)
            assert (point.count, point.min, point.max) == (other.count, other.min, other.max)
            assert point.sum == pytest.approx(other.sum)


async def test_a_delta_reader_gets_the_sdk_histograms() -> None:
    delta = InMemoryMetricReader(
        preferred_temporality={HistogramInstrument: AggregationTemporality.DELTA}
    )
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[delta]), traces=False)
    assert telemetry.instruments is not None and not telemetry.instruments.aggregated
    assert await _one_call(telemetry, {}) == 200
    (point,) = _points(delta, "agentguard.decision.duration")
    assert point.count == 1 and dict(point.attributes) == {"decision": "allow", "service": "crm"}
    (counted,) = _points(delta, "agentguard.decisions")
    assert counted.value == 1
