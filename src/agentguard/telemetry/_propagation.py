"""W3C Trace Context in and out: the parent of a decision's span, and the headers upstream.

In: the span's parent is the span already current in this context when there is one (an
instrumented app or server, which read the same ``traceparent``), else the request's own
``traceparent``/``tracestate`` (W3C Trace Context, through OpenTelemetry's propagator). A
request with more than one ``traceparent`` field, or an invalid one, starts a new trace.

Out (the proxy): the agent's ``traceparent``/``tracestate`` are replaced by the decision span's
context, so the upstream's spans are children of the decision (same trace id as the agent's
when it sent a valid one). When the span has no valid context (a no-op tracer provider), the
agent's fields are forwarded untouched, as without telemetry.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["inject", "parent"]

_PROPAGATOR = TraceContextTextMapPropagator()
_FIELDS = (b"traceparent", b"tracestate")


def parent(headers: Sequence[tuple[bytes, bytes]]) -> tuple[Context | None, SpanKind]:
    """The context to start a decision's span in, and the span's kind."""
    if trace.get_current_span().get_span_context().is_valid:
        return None, SpanKind.INTERNAL  # a server span of the app's instrumentation is current
    parents: list[str] = []
    states: list[str] = []
    for name, value in headers:
        if name == b"traceparent":
            parents.append(value.decode("latin-1"))
        elif name == b"tracestate":
            states.append(value.decode("latin-1"))
    if len(parents) != 1:  # none, or ambiguous (RFC 9110 would join them into nonsense)
        return Context(), SpanKind.SERVER
    carrier: dict[str, str | list[str]] = {"traceparent": parents[0]}
    if states:
        carrier["tracestate"] = states
    return _PROPAGATOR.extract(carrier, context=Context()), SpanKind.SERVER


def inject(headers: list[tuple[bytes, bytes]], context: SpanContext) -> list[tuple[bytes, bytes]]:
    """``headers`` with the agent's trace context replaced by span ``context`` (the W3C
    fields, as OpenTelemetry's propagator writes them)."""
    if not context.is_valid:
        return headers
    kept = [(name, value) for name, value in headers if name.lower() not in _FIELDS]
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    kept.append((b"traceparent", parent.encode()))
    if context.trace_state:
        kept.append((b"tracestate", context.trace_state.to_header().encode("latin-1")))
    return kept
