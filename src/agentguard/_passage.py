"""A request the guard admitted, on its way through the rest of the pipeline.

:meth:`Guard.admit <agentguard.Guard.admit>` runs the decision steps (target, credentials,
resolution, DPoP binding and replay, authorization) and returns a :class:`Passage`. The adapter
then drives the content steps through it, whatever the framework: request review before the
route or upstream sees the body, response review while the body flows back. Findings are audited
here, so no adapter records review events of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agentguard.errors import RequestRefused
from agentguard.review._base import Direction, ReviewContext, Verdict
from agentguard.review._chain import CHAIN_NAME
from agentguard.review._errors import blocked
from agentguard.review._events import media_type, record_findings

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._gates import BodyGate
    from agentguard._model import Principal
    from agentguard._permissions import Requirement
    from agentguard._request import GuardRequest
    from agentguard.audit._writer import AuditWriter
    from agentguard.review._chain import ReviewChain
    from agentguard.telemetry._decision import DecisionTrace

__all__ = ["Passage", "ResponseReview", "Reviews"]

#: The finding for a body the reviewers cannot read: a ``Content-Encoding`` (gzip, br, ...)
#: other than ``identity``. Such a body is blocked, never passed on unread.
ENCODED = "encoded_body_unreviewable"


def _encoded(value: bytes | str | None) -> bool:
    """Whether a ``Content-Encoding`` value (every field of it joined with commas, as RFC 9110
    §5.3 reads repeated fields) names any coding but ``identity``."""
    if value is None:
        return False
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return any(coding.strip().lower() not in ("", "identity") for coding in text.split(","))


class _Stream(Protocol):
    context: ReviewContext
    findings: list[Verdict]

    async def feed(self, chunk: bytes) -> bytes: ...

    async def finish(self) -> bytes: ...


class _Unreadable:
    """The stream review of an encoded response: any body at all is blocked."""

    def __init__(self, context: ReviewContext) -> None:
        self.context = context
        self.findings: list[Verdict] = []

    async def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        verdict = Verdict.block(CHAIN_NAME, ENCODED)
        self.findings.append(verdict)
        raise blocked(Direction.OUT, verdict)

    async def finish(self) -> bytes:
        return b""


class Reviews:
    """The review steps of the pipeline: the two chains and where their findings go.

    Built by :meth:`Guard.reviews <agentguard.Guard.reviews>`; immutable.
    """

    __slots__ = ("_audit", "_clock", "request_chain", "response_chain")

    def __init__(
        self,
        request_chain: ReviewChain | None,
        response_chain: ReviewChain | None,
        audit: AuditWriter,
        clock: Clock,
    ) -> None:
        object.__setattr__(self, "request_chain", request_chain)
        object.__setattr__(self, "response_chain", response_chain)
        object.__setattr__(self, "_audit", audit)
        object.__setattr__(self, "_clock", clock)

    request_chain: ReviewChain | None
    response_chain: ReviewChain | None
    _audit: AuditWriter
    _clock: Clock

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Reviews is immutable; cannot set {name!r}")

    def __repr__(self) -> str:
        return f"Reviews(request={self.request_chain!r}, response={self.response_chain!r})"

    def __bool__(self) -> bool:
        return self.request_chain is not None or self.response_chain is not None

    async def record(self, findings: Iterable[Verdict], context: ReviewContext) -> None:
        """Audit ``findings`` about ``context``: one ``review.verdict`` event each."""
        await record_findings(self._audit, findings, context, self._clock.now())


class ResponseReview:
    """Reviews one response body as it streams: ``feed`` each chunk, send what it returns, then
    ``finish``; ``close`` audits the findings (call it once the response is over, in ``finally``).

    ``feed``/``finish`` raise :class:`~agentguard.review.ResponseBlocked` when a reviewer blocks.
    """

    __slots__ = ("_closed", "_reviews", "_trace", "stream")

    def __init__(
        self, stream: _Stream, reviews: Reviews, trace: DecisionTrace | None = None
    ) -> None:
        self.stream = stream
        self._reviews = reviews
        self._trace = trace
        self._closed = False

    @property
    def context(self) -> ReviewContext:
        """What the reviewers are told about this response."""
        return self.stream.context

    async def feed(self, chunk: bytes) -> bytes:
        """Review ``chunk``; the bytes now safe to send (maybe none)."""
        return await self.stream.feed(chunk)

    async def finish(self) -> bytes:
        """The rest of the body once the upstream or route has sent it all."""
        return await self.stream.finish()

    async def close(self) -> None:
        """Audit what the reviewers found (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._trace is not None:
            self._trace.verdicts(self.stream.findings, Direction.OUT.value)
        await self._reviews.record(self.stream.findings, self.stream.context)


@dataclass(frozen=True, slots=True)
class Passage:
    """A request the guard allowed: who sent it, what it needed, and the review steps left.

    Adapters get one from :meth:`Guard.admit <agentguard.Guard.admit>` and call
    :meth:`review_request` with the body before the route or upstream sees it and
    :meth:`review_response` for what comes back. Without reviewers both cost nothing.
    """

    request: GuardRequest
    principal: Principal
    requirement: Requirement | None
    reviews: Reviews
    service: str | None = None
    gate: BodyGate | None = None
    """The approval step (and the budgets after it) for a call its rule holds for approval."""
    trace: DecisionTrace | None = None
    """The decision's span and metrics (:mod:`agentguard.telemetry`), ``None`` without
    telemetry; an adapter that sees the response through calls its ``end()``."""

    @property
    def reviews_request(self) -> bool:
        """Whether the adapter must read the request body and pass it to
        :meth:`review_request` before the route or upstream sees it: there are request
        reviewers, or the call waits for an approval bound to its body."""
        return self.reviews.request_chain is not None or self.gate is not None

    @property
    def reviews_response(self) -> bool:
        """Whether response bodies are reviewed."""
        return self.reviews.response_chain is not None

    @property
    def request_cap(self) -> int:
        """The largest request body the steps look at (0 without reviewers or an approval)."""
        chain = self.reviews.request_chain
        cap = 0 if chain is None else chain.max_bytes
        return cap if self.gate is None else max(cap, self.gate.max_body)

    def context(self, direction: Direction, content_type: bytes | str | None) -> ReviewContext:
        """The :class:`~agentguard.review.ReviewContext` of this request's content."""
        request = self.request
        return ReviewContext(
            direction, request.method, request.audit_path, media_type(content_type),
            self.service, self.principal, request.request_id,
        )  # fmt: skip

    async def review_request(self, body: bytes, content_type: bytes | str | None = None) -> bytes:
        """The body to pass on after the request reviewers (possibly redacted).

        Findings are audited; a block raises :class:`~agentguard.review.RequestBlocked` (403).
        A body over the chain's cap is refused or passed unchanged, as the chain's ``over_cap``
        says; a body with a ``Content-Encoding`` the reviewers cannot read is blocked.

        A call waiting for an approval first passes the approval step and the budgets (see
        :mod:`agentguard._gates`), which raise their own refusals (403, 429, 413), audited.
        """
        if self.gate is not None:
            try:
                await self.gate(body)
            except RequestRefused as refusal:
                if self.trace is not None:
                    self.trace.refused(refusal)
                raise
        chain = self.reviews.request_chain
        if chain is None:
            return body
        if content_type is None:
            content_type = self.request.header(b"content-type")
        context = self.context(Direction.IN, content_type)
        if body and _encoded(b",".join(self.request.header_values(b"content-encoding"))):
            verdict = Verdict.block(CHAIN_NAME, ENCODED)
            if self.trace is not None:
                self.trace.verdicts((verdict,), Direction.IN.value)
            await self.reviews.record((verdict,), context)
            raise blocked(Direction.IN, verdict)
        result = await chain.review_body(context, body)
        if self.trace is not None:
            self.trace.verdicts(result.findings, Direction.IN.value)
        await self.reviews.record(result.findings, context)
        if result.blocked is not None:
            raise blocked(Direction.IN, result.blocked)
        return result.body

    def review_response(
        self, content_type: bytes | str | None, content_encoding: bytes | str | None = None
    ) -> ResponseReview | None:
        """A streaming review of the response body, or ``None`` without response reviewers.

        ``content_encoding`` is every ``Content-Encoding`` field joined with commas. An encoded
        body (any coding other than ``identity``) cannot be read by the
        reviewers: any byte of it is blocked. Compress outside the guard (for Starlette, add
        ``GZipMiddleware`` after ``AgentGuardMiddleware``).
        """
        chain = self.reviews.response_chain
        if chain is None:
            return None
        context = self.context(Direction.OUT, content_type)
        if _encoded(content_encoding):
            return ResponseReview(_Unreadable(context), self.reviews, self.trace)
        return ResponseReview(chain.stream(context), self.reviews, self.trace)
