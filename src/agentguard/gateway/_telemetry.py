"""Telemetry on the gateway (``[telemetry]``): the guard's spans and metrics, and ``/metrics``.

``[telemetry] traces = true``: one span per decision. The spans go to OpenTelemetry's global
tracer provider when the process set one (``opentelemetry-instrument agentguard serve``, or a
program embedding the gateway); otherwise the gateway makes an SDK provider named
``service_name`` that exports over OTLP/HTTP (``pip install opentelemetry-exporter-otlp-proto-
http``; endpoint, headers and sampler from the standard ``OTEL_*`` environment variables).
Without either, startup fails and says so rather than tracing into nothing.

``[telemetry] metrics = true``: the metrics go to a meter provider of the gateway's own, read by
a :class:`~agentguard.telemetry.PrometheusReader`, and ``GET /metrics`` on the operator
listener answers the Prometheus text format. It needs an operator token
(``Authorization: Bearer ag_op_...``), like every other operator endpoint: the figures name the
services, reviewers and refusal reasons and show traffic, which is for operators; Prometheus
sends the token with ``authorization: {type: Bearer, credentials_file: ...}``. The operator
listener is not the agents' listener, so agents never reach it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentguard.asgi._operator import OperatorEndpoints
from agentguard.asgi._responses import send_raw
from agentguard.config import Settings
from agentguard.errors import ConfigurationError, MethodNotAllowed

if TYPE_CHECKING:
    from agentguard._model import OperatorRecord
    from agentguard.asgi._types import Scope, Send
    from agentguard.telemetry import PrometheusReader, Telemetry

__all__ = ["MetricsEndpoint", "gateway_telemetry", "metrics_endpoints"]

logger = logging.getLogger("agentguard.gateway")

_OTLP = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def gateway_telemetry(settings: Settings) -> Telemetry | None:
    """The guard's :class:`~agentguard.telemetry.Telemetry` ``[telemetry]`` describes, or
    ``None`` when both traces and metrics are off (nothing of OpenTelemetry is imported)."""
    options = settings.telemetry
    if not options.traces and not options.metrics:
        return None
    from agentguard.telemetry import Telemetry

    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        raise ConfigurationError(
            "[telemetry] needs OpenTelemetry: pip install 'agentguard[otel]'"
        ) from None
    resource = Resource.create({"service.name": options.service_name})
    tracer_provider = _tracer_provider(resource) if options.traces else None
    reader = None
    meter_provider = None
    if options.metrics:
        from opentelemetry.sdk.metrics import MeterProvider

        from agentguard.telemetry import PrometheusReader

        reader = PrometheusReader()
        meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        traces=options.traces,
        metrics=options.metrics,
        prometheus=reader,
    )


def _tracer_provider(resource: Any) -> Any:
    """The process's tracer provider if it set one, else an SDK one exporting over OTLP."""
    from opentelemetry import trace

    configured = trace.get_tracer_provider()
    if not isinstance(configured, trace.ProxyTracerProvider):
        return configured
    if importlib.util.find_spec(_OTLP.rsplit(".", 1)[0]) is None:
        raise ConfigurationError(
            "[telemetry] traces = true, but there is nowhere to send spans: install "
            "opentelemetry-exporter-otlp-proto-http (OTEL_EXPORTER_OTLP_ENDPOINT says where), "
            "or run the gateway under opentelemetry-instrument"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class MetricsEndpoint:
    """``GET /metrics`` on the operator listener: Prometheus text, token needed."""

    segment = "metrics"

    def __init__(self, reader: PrometheusReader) -> None:
        self.reader = reader

    def __repr__(self) -> str:
        return "MetricsEndpoint(/metrics)"

    def public(self, parts: Sequence[str]) -> bool:
        """Never: the metrics are for operators (see the module doc)."""
        return False

    async def handle(
        self, scope: Scope, send: Send, parts: Sequence[str], operator: OperatorRecord | None
    ) -> bool:
        """Answer ``/metrics``; any deeper path is a 404 (``False``)."""
        if list(parts) != ["metrics"]:
            return False
        if scope["method"] != "GET":
            raise MethodNotAllowed(("GET",))
        from agentguard.telemetry._prometheus import CONTENT_TYPE

        headers = [("content-type", CONTENT_TYPE), ("cache-control", "no-store")]
        await send_raw(send, 200, headers, self.reader.render())
        return True


def metrics_endpoints(
    settings: Settings, telemetry: Telemetry | None = None
) -> OperatorEndpoints | None:
    """The ``/metrics`` endpoint, or ``None`` when metrics are off (or not read for Prometheus)."""
    if not settings.telemetry.metrics or telemetry is None or telemetry.prometheus is None:
        return None
    return MetricsEndpoint(telemetry.prometheus)
