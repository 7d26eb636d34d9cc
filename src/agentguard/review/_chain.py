"""Running reviewers in order: the first block wins, redactions accumulate, errors fail closed.

Each reviewer sees the content as the reviewers before it left it (so a redaction is never
undone by a later reviewer seeing the original). Every reviewer runs under its own timeout; a
reviewer that raises, times out or answers something that is not a :class:`Verdict` blocks,
unless it was added with ``on_error="allow"``, in which case the failure is still reported as a
finding (and audited).

Size cap: bodies larger than ``max_bytes`` are not reviewed. ``over_cap="block"`` (the default)
refuses them, so a reviewer can never be bypassed by padding; ``over_cap="pass"`` lets them
through unreviewed and reports an ``unreviewed_over_cap`` finding. Streamed bodies are reviewed
window by window when every reviewer supports it (see :class:`~agentguard.review.Reviewer`),
and otherwise buffered up to the same cap.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Union

import anyio
import anyio.to_thread

from agentguard.review._base import Outcome, ReviewContext, Reviewer, ReviewerFunction, Verdict
from agentguard.review._budget import deadline
from agentguard.review._views import byte_readings, text_readings

if TYPE_CHECKING:
    from agentguard.review._stream import ChainStream

__all__ = [
    "CHAIN_NAME",
    "ChainResult",
    "ReviewChain",
    "ReviewStep",
    "ReviewerLike",
    "as_chain",
    "decode_body",
    "encode_body",
]

logger = logging.getLogger("agentguard.review")

CHAIN_NAME = "review_chain"
FAILED_OPEN = "reviewer_failed_open"
OVER_CAP_PASSED = "unreviewed_over_cap"

OnError = Literal["block", "allow"]
OverCap = Literal["block", "pass"]


def decode_body(body: bytes) -> str:
    """Bytes to the text reviewers see; undecodable bytes survive a round trip unchanged."""
    return body.decode("utf-8", "surrogateescape")


def encode_body(text: str) -> bytes:
    """The inverse of :func:`decode_body` (characters a reviewer invented that UTF-8 cannot
    carry become ``?``)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


@dataclass(frozen=True)
class ReviewStep:
    """A reviewer with its policy: how long it may take and what its failure means.

    Args:
        reviewer: a :class:`Reviewer`, or a plain sync or async function
            ``(context, content) -> Verdict``. Sync functions run in a worker thread so the
            timeout holds and the event loop is never blocked.
        timeout: seconds before the reviewer counts as failed. It takes effect where the
            reviewer awaits: built-in reviewers await a
            :func:`~agentguard.review.checkpoint` after each linear-time step, which
            also gives the event loop to other requests.
        on_error: ``"block"`` (default, fail closed) or ``"allow"`` when it fails.
        name: shown in verdicts and audit events; defaults to the reviewer's ``name``
            attribute, its function name or its class name.
        clock: seconds for the deadline checkpoints enforce (default: the event loop's
            clock, ``anyio.current_time``); tests inject one to make the deadline pass.
    """

    reviewer: Reviewer | ReviewerFunction
    timeout: float = 2.0
    on_error: OnError = "block"
    name: str = ""
    clock: Callable[[], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("a reviewer timeout is positive")
        if self.on_error not in ("block", "allow"):
            raise ValueError("on_error is 'block' or 'allow'")
        if not self.name:
            reviewer = self.reviewer
            label = getattr(reviewer, "name", None)
            if not isinstance(label, str) or not label:
                label = getattr(reviewer, "__name__", None) or type(reviewer).__name__
            object.__setattr__(self, "name", label)

    @property
    def streaming(self) -> bool:
        """Whether the reviewer judges a stream one window at a time."""
        return getattr(self.reviewer, "streaming", False) is True

    @property
    def overlap(self) -> int:
        """Characters each window repeats from the previous one."""
        value = getattr(self.reviewer, "overlap", 0)
        return value if isinstance(value, int) and value > 0 else 0

    async def _call(self, context: ReviewContext, content: str) -> object:
        reviewer = self.reviewer
        method = getattr(reviewer, "review", None)
        if method is not None and not inspect.isfunction(reviewer):
            result: object = method(context, content)
        elif inspect.iscoroutinefunction(reviewer):
            result = reviewer(context, content)
        elif callable(reviewer):
            call = functools.partial(reviewer, context, content)
            result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        else:
            raise TypeError("a reviewer has a review method or is callable")
        if inspect.isawaitable(result):
            result = await result
        return result

    async def run(self, context: ReviewContext, content: str) -> Verdict:
        """The reviewer's verdict, or the failure verdict its ``on_error`` asks for."""
        failure = "reviewer_timeout"
        clock = self.clock or anyio.current_time
        try:
            with anyio.fail_after(self.timeout), deadline(clock() + self.timeout, clock):
                result = await self._call(context, content)
            if isinstance(result, Verdict):
                if result.reviewer != self.name:
                    result = dataclasses.replace(result, reviewer=self.name)
                return result
            failure = "reviewer_bad_answer"
        except TimeoutError:
            pass
        except Exception as error:
            # The exception's text may quote the content, so only its type is logged.
            logger.warning("reviewer %s failed: %s", self.name, type(error).__name__)
            failure = "reviewer_error"
        if self.on_error == "allow":
            return Verdict.allow(self.name, FAILED_OPEN)
        return Verdict.block(self.name, failure)


ReviewerLike = Union[Reviewer, ReviewerFunction, ReviewStep]  # noqa: UP007 - a runtime alias


@dataclass(frozen=True)
class ChainResult:
    """What the chain decided about one body.

    ``content`` is the (possibly redacted) text; ``blocked`` the first blocking verdict, if
    any; ``findings`` every verdict worth an audit event (non-allow verdicts, reviewers that
    failed open, bodies passed unreviewed over the cap), in order.
    """

    content: str
    blocked: Verdict | None = None
    findings: tuple[Verdict, ...] = ()
    changed: bool = False
    original: bytes | None = None

    @property
    def body(self) -> bytes:
        """The bytes to send on (the original bytes when nothing changed)."""
        if not self.changed and self.original is not None:
            return self.original
        return encode_body(self.content)


def _step(item: ReviewerLike) -> ReviewStep:
    return item if isinstance(item, ReviewStep) else ReviewStep(item)


class ReviewChain:
    """Reviewers in order, with a size cap. Pass one to ``ProxyApp`` or the middleware, or a
    plain list of reviewers (which becomes a chain with the defaults).

    Args:
        reviewers: reviewers, functions or :class:`ReviewStep` items, run in this order.
        max_bytes: largest body reviewed (default 1 MiB); see ``over_cap``.
        over_cap: ``"block"`` (default) refuses larger bodies; ``"pass"`` lets them through
            unreviewed, with an ``unreviewed_over_cap`` finding.
    """

    def __init__(
        self,
        reviewers: Iterable[ReviewerLike],
        *,
        max_bytes: int = 1024 * 1024,
        over_cap: OverCap = "block",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes is positive")
        if over_cap not in ("block", "pass"):
            raise ValueError("over_cap is 'block' or 'pass'")
        self.steps: tuple[ReviewStep, ...] = tuple(_step(item) for item in reviewers)
        self.max_bytes = max_bytes
        self.over_cap: OverCap = over_cap

    def __repr__(self) -> str:
        names = ", ".join(step.name for step in self.steps)
        return f"ReviewChain([{names}], max_bytes={self.max_bytes}, over_cap={self.over_cap!r})"

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def streaming(self) -> bool:
        """Whether every reviewer can judge a stream window by window."""
        return all(step.streaming for step in self.steps)

    def over_cap_verdict(self) -> Verdict:
        """The finding for a body larger than ``max_bytes``."""
        if self.over_cap == "pass":
            return Verdict.allow(CHAIN_NAME, OVER_CAP_PASSED)
        return Verdict.block(CHAIN_NAME, "over_size_cap")

    async def review(
        self,
        context: ReviewContext,
        content: str,
        steps: Sequence[ReviewStep] | None = None,
    ) -> ChainResult:
        """Run the reviewers (or ``steps``) over ``content``; never raises for a verdict.

        The other readings of the (possibly redacted) text a consumer may see
        (:func:`~agentguard.review._views.text_readings`) are reviewed too: a finding there
        blocks.
        """
        chosen = self.steps if steps is None else steps
        current = content
        findings: list[Verdict] = []
        for step in chosen:
            verdict = await step.run(context, current)
            if verdict.outcome is Outcome.BLOCK:
                findings.append(verdict)
                return ChainResult(current, verdict, tuple(findings), current != content)
            if verdict.outcome is Outcome.REDACT:
                assert verdict.replacement is not None  # noqa: S101 - Verdict guarantees it
                current = verdict.replacement
                findings.append(verdict)
            elif verdict.reason == FAILED_OPEN:
                findings.append(verdict)
        flagged = await self._flag_readings(context, text_readings(current), chosen)
        if flagged is not None:
            findings.append(flagged)
            return ChainResult(current, flagged, tuple(findings), current != content)
        return ChainResult(current, None, tuple(findings), current != content)

    async def _flag_readings(
        self, context: ReviewContext, readings: Sequence[str], steps: Sequence[ReviewStep]
    ) -> Verdict | None:
        """The block for the first reading a reviewer flags (a block or a redaction, which
        cannot be applied to bytes it did not read), or ``None``."""
        for reading in readings:
            for step in steps:
                verdict = await step.run(context, reading)
                if verdict.outcome is not Outcome.ALLOW:
                    return Verdict.block(verdict.reviewer, verdict.reason)
        return None

    async def review_body(self, context: ReviewContext, body: bytes) -> ChainResult:
        """Review a complete body, applying the size cap."""
        if len(body) > self.max_bytes:
            verdict = self.over_cap_verdict()
            blocked = verdict if verdict.outcome is Outcome.BLOCK else None
            return ChainResult("", blocked, (verdict,), original=body)
        if not body or not self.steps:
            return ChainResult("", original=body)
        result = await self.review(context, decode_body(body))
        if result.blocked is None:  # the same bytes read as UTF-16/32, as JSON parsers may
            flagged = await self._flag_readings(context, byte_readings(body), self.steps)
            if flagged is not None:
                findings = (*result.findings, flagged)
                return ChainResult(result.content, flagged, findings, result.changed, body)
        return dataclasses.replace(result, original=body)

    def stream(self, context: ReviewContext) -> ChainStream:
        """A reviewer for one streamed body (see :class:`~agentguard.review.ChainStream`)."""
        from agentguard.review._stream import ChainStream

        return ChainStream(self, context)


def as_chain(reviewers: ReviewChain | Iterable[ReviewerLike] | None) -> ReviewChain | None:
    """A chain from what an app was given; ``None`` when there is nothing to review with."""
    if reviewers is None:
        return None
    chain = reviewers if isinstance(reviewers, ReviewChain) else ReviewChain(reviewers)
    return chain if chain.steps else None
