"""The refusal a blocking verdict becomes: 403 ``request_blocked`` or ``response_blocked``."""

from __future__ import annotations

from typing import ClassVar

from agentguard.errors import Reason, RequestRefused
from agentguard.review._base import Direction, Verdict

__all__ = ["RequestBlocked", "ResponseBlocked", "ReviewBlocked", "blocked"]

# Until errors.Reason gains REVIEW_BLOCKED ("review_blocked"), blocks are recorded under the
# closest existing reason; the reviewer's own reason is in the body and the review event.
_REASON: Reason = getattr(Reason, "REVIEW_BLOCKED", Reason.MALFORMED_REQUEST)


class ReviewBlocked(RequestRefused):
    """A reviewer blocked the content. The description names the reviewer and its reason code,
    never the content."""

    status = 403
    error: ClassVar[str | None] = "request_blocked"
    default_reason = _REASON
    sends_challenge = False

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(f"blocked by reviewer {verdict.reviewer!r}: {verdict.reason}")

    def body(self) -> dict[str, str]:
        body = super().body()
        body["reviewer"] = self.verdict.reviewer
        body["review_reason"] = self.verdict.reason
        return body


class RequestBlocked(ReviewBlocked):
    """The agent's outgoing request was blocked before the upstream or the route saw it."""

    error: ClassVar[str | None] = "request_blocked"


class ResponseBlocked(ReviewBlocked):
    """The response was blocked before the agent could read it."""

    error: ClassVar[str | None] = "response_blocked"


def blocked(direction: Direction, verdict: Verdict) -> ReviewBlocked:
    """The error for a blocking ``verdict`` on content flowing ``direction``."""
    cls = RequestBlocked if direction is Direction.IN else ResponseBlocked
    return cls(verdict)
