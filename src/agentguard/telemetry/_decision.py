"""One decision, observed: its span and its metrics, from the guard's first step to the end of
the response.

The guard starts a :class:`DecisionTrace` when it starts deciding (only when telemetry is
configured). The decision's audit event fills the span's attributes when it is appended (the
span and the event share the decision id, ``request_id``, and the span names the event's
``seq``); a refusal ends it there. An allowed call's trace travels in the
:class:`~agentguard.Passage`: the adapter ends it when the response is over, after noting the
upstream's status, reviewer verdicts and a later refusal. An adapter that does not end it
(a decision taken for another framework) has it ended when the passage is dropped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry.trace import Span, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from agentguard.telemetry import _names as names
from agentguard.telemetry._propagation import inject, parent

if TYPE_CHECKING:
    from agentguard._permissions import Requirement
    from agentguard._request import GuardRequest
    from agentguard.asgi._types import Message, Send
    from agentguard.audit._events import AuditEvent
    from agentguard.audit._writer import AuditWriter
    from agentguard.errors import RequestRefused
    from agentguard.review._base import ReviewContext, Verdict
    from agentguard.telemetry._instruments import Instruments, Measured
    from agentguard.telemetry._spans import DirectSpan, DirectSpans

__all__ = ["DecisionTrace"]

_LIMITS = {"budget_exhausted": "budget", "rate_limited": "rate"}
_MAX_VERDICTS = 32  # span attributes stay bounded whatever a chain reports
_Record = Callable[["Iterable[Verdict]", "ReviewContext"], Awaitable[None]]


class DecisionTrace:
    """The span and metrics of one decision (see the module doc); not thread-safe, one request."""

    __slots__ = (
        "_attributes",
        "_decision",
        "_duration",
        "_ended",
        "_instruments",
        "_reason",
        "_service",
        "_span",
        "_started",
        "_status",
        "_upstream",
        "_verdicts",
        "request_id",
    )

    def __init__(
        self,
        request: GuardRequest,
        tracer: Tracer | None,
        instruments: Instruments | None,
        instance: str | None,
        spans: DirectSpans | None = None,
    ) -> None:
        self.request_id = request.request_id
        self._started = time.perf_counter()
        self._instruments = instruments
        self._decision: str | None = None
        self._reason: str | None = None
        self._service: str | None = None
        self._status: int | None = None
        self._verdicts: list[str] = []
        self._ended = False
        self._duration: Measured | None = None  # recorded when the trace ends (one lock)
        self._upstream: Measured | None = None
        self._attributes: dict[str, AttributeValue] = {
            names.DECISION_ID: request.request_id,
            names.METHOD: request.method,
        }
        if instance is not None:
            self._attributes[names.INSTANCE] = instance
        self._span: Span | DirectSpan | None = None
        if tracer is not None:
            context, kind = parent(request.headers)
            if spans is not None and spans.usable():
                self._span = spans.start(context, kind)
            else:
                self._span = tracer.start_span(names.SPAN_NAME, context=context, kind=kind)

    @property
    def span(self) -> Span | DirectSpan | None:
        """The decision's span (``None`` when only metrics are on)."""
        return self._span

    @property
    def ended(self) -> bool:
        """Whether the trace was ended (its span exported, its decision counted)."""
        return self._ended

    async def record(
        self, audit: AuditWriter, event: AuditEvent, requirement: Requirement | None
    ) -> None:
        """Append the decision's ``event`` through ``audit`` and note it; a refusal ends here.

        If the append fails the trace ends with the refusal it raised (503), and re-raises.
        """
        try:
            entry = await audit.record(event)
        except BaseException as error:
            self._note(event, requirement, None)
            self._attributes[names.AUDITED] = False
            reason = getattr(error, "reason", None)
            self._decision = "deny"
            self._reason = getattr(reason, "value", "audit_unavailable")
            self._status = getattr(error, "status", 503)
            self.end()
            raise
        self._note(event, requirement, None if entry is None else entry.seq)
        if self._decision == "deny":
            self.end()

    def counted(self, error: RequestRefused, service: str | None) -> None:
        """A refusal counted into a summary rather than appended as an event: end here."""
        self._service = service
        if service is not None:
            self._attributes[names.SERVICE] = service
        self.refused(error)
        self._measure_decision()
        self.end()

    def refused(self, error: RequestRefused) -> None:
        """The call was refused after all (a gate, an upstream failure): the final outcome."""
        self._decision = "deny"
        self._reason = error.reason.value
        self._status = error.status

    def upstream(self, status: int | None, seconds: float, failure: str | None = None) -> None:
        """The upstream answered ``status`` after ``seconds`` (or failed: ``failure``)."""
        instruments = self._instruments
        if instruments is not None:
            if self._upstream is not None:  # a second upstream call: the first one now
                instruments.upstream_duration.record(*self._upstream)
            key = (self._service or "", status, None if status is not None else failure or "failed")
            self._upstream = (seconds, key)
        if status is not None:
            self._attributes[names.UPSTREAM_STATUS] = status
        self._attributes[names.UPSTREAM_LATENCY_US] = int(seconds * 1_000_000)

    def verdicts(self, findings: Iterable[Verdict], direction: str) -> None:
        """Note reviewer findings (counted, and listed on the span)."""
        instruments = self._instruments
        for verdict in findings:
            outcome = verdict.outcome.value
            if instruments is not None:
                instruments.verdicts.add((direction, verdict.reviewer, outcome, verdict.reason))
            if len(self._verdicts) < _MAX_VERDICTS:
                self._verdicts.append(f"{direction}:{verdict.reviewer}:{outcome}:{verdict.reason}")

    def recording(self, record: _Record) -> _Record:
        """``record`` (how review findings are audited), noting the findings here as well."""

        async def noted(findings: Iterable[Verdict], context: ReviewContext) -> None:
            findings = list(findings)
            self.verdicts(findings, context.direction.value)
            await record(findings, context)

        return noted

    def inject(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The upstream request's headers, carrying this decision's trace context."""
        span = self._span
        return headers if span is None else inject(headers, span.get_span_context())

    def watch(self, send: Send) -> Send:
        """``send``, noting the status the agent is sent."""

        async def watched(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                self._status = message["status"]
            elif kind == "websocket.accept":
                self._status = 101
            await send(message)

        return watched

    def end(self) -> None:
        """Count the decision and end the span (once; later calls do nothing)."""
        if self._ended:
            return
        self._ended = True
        decision, reason, service = self._decision, self._reason, self._service
        instruments = self._instruments
        if instruments is not None:
            counted = limited = None
            if decision is not None:
                counted = (decision, service or "", reason)
                limit = _LIMITS.get(reason or "")
                if limit is not None:
                    limited = (limit, service or "")
            instruments.decided(counted, limited, self._duration, self._upstream)
        span = self._span
        if span is None:
            return
        attributes = self._attributes
        if decision is not None:
            attributes[names.DECISION] = decision
        if reason is not None:
            attributes[names.REASON] = reason
        status = self._status
        if status is not None:
            attributes[names.STATUS] = status
        if self._verdicts:
            attributes[names.VERDICTS] = tuple(self._verdicts)
        span.set_attributes(attributes)
        if status is not None and status >= 500:
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end()

    def __del__(self) -> None:  # an adapter that never ended it: end when the passage goes
        if not self._ended:
            with contextlib.suppress(Exception):  # a finalizer must not raise: the span is lost
                self.end()

    def _note(self, event: AuditEvent, requirement: Requirement | None, seq: int | None) -> None:
        attributes = self._attributes
        if seq is not None:
            attributes[names.AUDIT_SEQ] = seq
        self._service = event.service
        for key, value in (
            (names.SERVICE, event.service),
            (names.KEY_ID, event.key_id),
            (names.FAMILY_ID, event.family_id),
            (names.USER_ID, event.user_id),
            (names.WORKSPACE_ID, event.workspace_id),
            (names.ACCOUNT_ID, event.account_id),
            (names.LATENCY_US, event.latency_us),
        ):
            if value is not None:
                attributes[key] = value
        if requirement is not None:
            attributes[names.RULE_SCOPE] = requirement.scope
            if requirement.rule:
                attributes[names.RULE_VERSION] = requirement.rule
        decision = event.decision
        self._decision = None if decision is None else decision.value
        if event.reason is not None:
            self._reason = event.reason
        if event.status is not None:
            self._status = event.status
        self._measure_decision()

    def _measure_decision(self) -> None:
        if self._instruments is not None:
            if self._duration is not None:  # measured twice: the first one now
                self._instruments.decision_duration.record(*self._duration)
            self._duration = (
                time.perf_counter() - self._started,
                (self._decision or "", self._service or ""),
            )
