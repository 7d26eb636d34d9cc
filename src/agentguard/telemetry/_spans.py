"""Decision spans for an OpenTelemetry SDK ``TracerProvider``, without the SDK's span object.

The SDK's ``Span`` validates and copies each attribute as it is set, takes a lock per change,
and calls every span processor twice; for one span per decision that is most of the cost of
telemetry. A decision's attributes are few, typed by us (str, int, bool, a tuple of str) and
set once, so for an SDK provider whose span processors only look at ended spans (``on_end``:
the SDK's batch and simple processors, which is what exporters use) the decision span is
made the way the SDK's ``Tracer.start_span`` makes it, from the provider's own parts: its
id generator, its sampler (asked exactly as the SDK asks it; the SDK's default, a
``ParentBased`` over static samplers, is read instead: its decision follows from the parent's
flags, see :func:`static_decisions`), its resource; and, when it
ends, one ``ReadableSpan`` (the SDK's type for ended spans) goes to the provider's span
processors, as the SDK's ``Span.end`` does.

:func:`direct` answers ``None`` when the provider is not like that (another SDK, a processor
with ``on_start``/``_on_ending`` hooks, attribute limits tighter than a decision's, the SDK's
own tracer metrics on, a disabled tracer): the decision then uses the tracer's ``Span``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags, TraceState
from opentelemetry.util.types import AttributeValue

from agentguard.telemetry import _names as names

__all__ = ["DirectSpan", "DirectSpans", "direct", "static_decisions"]

_ATTRIBUTES_NEEDED = 64  # a decision has at most about 20 attributes
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


_QUIET = (SpanProcessor, SimpleSpanProcessor, BatchSpanProcessor)
_NO_START = frozenset(kind.on_start for kind in _QUIET)  # these do nothing (SDK 1.x)
_NO_ENDING = frozenset(getattr(kind, "_on_ending", None) for kind in _QUIET)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", None)  # SDKs since 1.39 set it


Decisions = tuple[Decision, Decision, Decision, Decision, Decision]
"""A parent-based sampler's fixed decisions: root, then remote parent sampled / not sampled,
then local parent sampled / not sampled."""


def _fixed(sampler: object) -> Decision | None:
    """The decision of the SDK's ``ALWAYS_ON``/``ALWAYS_OFF`` (exactly a ``StaticSampler``)."""
    if type(sampler) is not StaticSampler:
        return None
    decision = getattr(sampler, "_decision", None)
    return decision if isinstance(decision, Decision) else None


def static_decisions(sampler: Sampler) -> Decisions | None:
    """The decisions of ``sampler`` when it is exactly the SDK's ``ParentBased`` over static
    samplers (the SDK's default, ``parentbased_always_on``, is one): its decision then follows
    from the parent's ``SpanContext`` alone, as :func:`decide` reads it; else ``None``."""
    if type(sampler) is not ParentBased:
        return None
    parts = (
        getattr(sampler, "_root", None),
        getattr(sampler, "_remote_parent_sampled", None),
        getattr(sampler, "_remote_parent_not_sampled", None),
        getattr(sampler, "_local_parent_sampled", None),
        getattr(sampler, "_local_parent_not_sampled", None),
    )
    decisions = tuple(_fixed(part) for part in parts)
    if any(decision is None for decision in decisions):
        return None
    return decisions  # type: ignore[return-value]  # five, none of them None


def decide(decisions: Decisions, parent: SpanContext | None) -> tuple[Decision, TraceState | None]:
    """What ``ParentBased.should_sample`` answers for a span whose parent is ``parent`` (valid,
    or ``None``): the decision, and the trace state (the parent's; the SDK's static samplers
    add no attributes to a span they are not given any for)."""
    if parent is None:
        return decisions[0], None
    sampled = parent.trace_flags.sampled
    if parent.is_remote:
        return decisions[1 if sampled else 2], parent.trace_state
    return decisions[3 if sampled else 4], parent.trace_state


def _plain(processor: SpanProcessor) -> bool:
    """Whether ``processor`` does nothing until a span has ended."""
    kind = type(processor)
    return kind.on_start in _NO_START and getattr(kind, "_on_ending", None) in _NO_ENDING


def direct(provider: Any, tracer: Any) -> DirectSpans | None:
    """Direct decision spans for ``provider`` (``tracer`` is its tracer for us), if it allows."""
    if type(provider) is not TracerProvider or type(tracer).__name__ != "Tracer":
        return None
    if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
        return None  # the SDK counts its spans: let it
    processors = getattr(provider, "_active_span_processor", None)
    limits = getattr(provider, "_span_limits", None)
    if type(processors) is not SynchronousMultiSpanProcessor or limits is None:
        return None
    if limits.max_attribute_length is not None or (
        limits.max_span_attributes is not None and limits.max_span_attributes < _ATTRIBUTES_NEEDED
    ):
        return None
    enabled = getattr(tracer, "_is_enabled", None)
    if enabled is None or not enabled():
        return None
    return DirectSpans(provider, tracer, processors)


class DirectSpans:
    """Starts :class:`DirectSpan` s for one SDK provider (see the module doc)."""

    __slots__ = (
        "_checked",
        "_decisions",
        "_processors",
        "ids",
        "resource",
        "sampler",
        "scope",
        "tracer",
    )

    def __init__(
        self, provider: TracerProvider, tracer: Any, processors: SynchronousMultiSpanProcessor
    ) -> None:
        self.tracer = tracer
        self.ids = provider.id_generator
        self.sampler = provider.sampler
        self._decisions = static_decisions(self.sampler)
        self.resource = provider.resource
        self.scope = tracer._instrumentation_scope
        self._processors = processors
        self._checked: tuple[SpanProcessor, ...] | None = None

    def usable(self) -> bool:
        """Whether every span processor still only wants ended spans (processors can be
        added to a provider at any time: re-checked when the set changes)."""
        current = self._processors._span_processors
        if current is not self._checked:
            if not all(_plain(processor) for processor in current):
                return False
            self._checked = current
        return True

    def start(self, context: Context | None, kind: SpanKind) -> DirectSpan:
        """A decision span started now, its parent the span of ``context`` (``None``: the
        current context), as ``Tracer.start_span`` would make it."""
        started = time.time_ns()
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        ids = self.ids
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
            random_id = _RANDOM is not None and ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_id = _RANDOM is not None and bool(parent.trace_flags & _RANDOM)
        decisions = self._decisions
        attributes: dict[str, AttributeValue] = {}
        if decisions is not None:  # the SDK default: the parent's flags decide (no lookups)
            decision, state = decide(decisions, parent)
        else:
            result = self.sampler.should_sample(context, trace_id, names.SPAN_NAME, kind, None, ())
            decision, state = result.decision, result.trace_state
            if decision is not Decision.DROP and result.attributes:
                attributes = dict(result.attributes)
        flags = _SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _UNSAMPLED
        if random_id and _RANDOM is not None:
            flags = TraceFlags(flags | _RANDOM)
        own = SpanContext(trace_id, ids.generate_span_id(), False, flags, state)
        recording = decision is not Decision.DROP
        return DirectSpan(
            self,
            own,
            parent=parent,
            kind=kind,
            started=started,
            recording=recording,
            attributes=attributes,
        )

    def finish(self, span: ReadableSpan) -> None:
        """Hand an ended span to the provider's processors (as ``Span.end`` does)."""
        self._processors.on_end(span)


class DirectSpan:
    """A decision span (the part of the ``Span`` API the decision uses); one request."""

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_kind",
        "_parent",
        "_recording",
        "_spans",
        "_started",
        "_status",
    )

    def __init__(
        self,
        spans: DirectSpans,
        context: SpanContext,
        *,
        parent: SpanContext | None,
        kind: SpanKind,
        started: int,
        recording: bool,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self._spans = spans
        self._context = context
        self._parent = parent
        self._kind = kind
        self._started = started
        self._recording = recording
        self._attributes = attributes
        self._status = Status()
        self._ended = False

    def get_span_context(self) -> SpanContext:
        """The span's own context (what the upstream is sent)."""
        return self._context

    def is_recording(self) -> bool:
        """Whether the sampler chose to record it."""
        return self._recording and not self._ended

    def set_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        """Add ``attributes`` (values typed by the decision: str, int, bool, tuple of str)."""
        if self._recording:
            self._attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        """Set the span's status."""
        self._status = status

    def end(self) -> None:
        """End now and hand the span to the processors (once; only when recording)."""
        if self._ended:
            return
        self._ended = True
        if not self._recording:
            return
        spans = self._spans
        spans.finish(
            ReadableSpan(
                name=names.SPAN_NAME,
                context=self._context,
                parent=self._parent,
                resource=spans.resource,
                attributes=self._attributes,
                kind=self._kind,
                status=self._status,
                start_time=self._started,
                end_time=time.time_ns(),
                instrumentation_info=spans.tracer.instrumentation_info,
                instrumentation_scope=spans.scope,
            )
        )
