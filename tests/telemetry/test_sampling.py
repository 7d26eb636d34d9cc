"""The direct span path's sampling shortcut answers what the SDK's sampler answers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from agentguard.telemetry._spans import decide, static_decisions

_static = st.sampled_from([ALWAYS_ON, ALWAYS_OFF])
_samplers = st.builds(ParentBased, _static, _static, _static, _static, _static)
_states = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(TraceState)
_parents = st.builds(
    SpanContext,
    trace_id=st.integers(0, 2**128 - 1),
    span_id=st.integers(0, 2**64 - 1),
    is_remote=st.booleans(),
    trace_flags=st.integers(0, 255).map(TraceFlags),
    trace_state=_states,
)


@given(sampler=_samplers, parent=st.none() | _parents, trace_id=st.integers(1, 2**128 - 1))
def test_the_static_decision_equals_should_sample(
    sampler: ParentBased, parent: SpanContext | None, trace_id: int
) -> None:
    decisions = static_decisions(sampler)
    assert decisions is not None
    context = Context() if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
    expected = sampler.should_sample(context, trace_id, "agentguard.decision", SpanKind.SERVER)
    found = decide(decisions, parent if parent is not None and parent.is_valid else None)
    assert found == (expected.decision, expected.trace_state)
    assert not expected.attributes  # nothing the shortcut leaves out


def test_only_the_sdk_parent_based_static_samplers_take_the_shortcut() -> None:
    assert static_decisions(DEFAULT_ON) is not None
    assert static_decisions(DEFAULT_OFF) is not None
    assert static_decisions(ALWAYS_ON) is None
    assert static_decisions(TraceIdRatioBased(0.5)) is None
    assert static_decisions(ParentBasedTraceIdRatio(0.5)) is None  # a subclass, a ratio root

    class Custom(StaticSampler):
        pass

    assert static_decisions(ParentBased(Custom(ALWAYS_ON._decision))) is None

    class Sub(ParentBased):
        pass

    assert static_decisions(Sub(ALWAYS_ON)) is None
