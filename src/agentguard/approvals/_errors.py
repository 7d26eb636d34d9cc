"""The refusals of the approval step: held back for a human, or not the approved call."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from agentguard.errors import Reason, RequestRefused, TooManyRequests

__all__ = ["APPROVAL_HEADER", "ApprovalInvalid", "ApprovalQueueFull", "ApprovalRequired"]

APPROVAL_HEADER = "agentguard-approval"
"""The request header an agent names its approval in when it sends the held-back call again
(and the response header a held-back call's approval id comes back in)."""


class ApprovalRequired(RequestRefused):
    """403 ``approval_required``: the call waits for a human; nothing was forwarded.

    Attributes:
        approval_id: the approval to wait for and to name in the retry's
            ``AgentGuard-Approval`` header.
        status_uri: where the agent's runtime polls the approval's status (with its own key),
            or ``None`` when no status endpoint is mounted.
        expires_at: the approval must be decided and used before this instant.
    """

    status = 403
    error: ClassVar[str | None] = "approval_required"
    default_reason = Reason.APPROVAL_REQUIRED

    def __init__(
        self,
        description: str | None = None,
        *,
        approval_id: str,
        expires_at: datetime,
        status_uri: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.approval_id = approval_id
        self.expires_at = expires_at
        self.status_uri = status_uri
        super().__init__(description, reason=reason)

    def response_headers(self) -> list[tuple[str, str]]:
        return [(APPROVAL_HEADER, self.approval_id)]

    def body(self) -> dict[str, str]:
        body = super().body()
        body["approval_id"] = self.approval_id
        body["expires_at"] = self.expires_at.isoformat().replace("+00:00", "Z")
        if self.status_uri is not None:
            body["approval_uri"] = self.status_uri
        return body


class ApprovalInvalid(RequestRefused):
    """403 ``approval_invalid``: the named approval cannot let this call run.

    The reason says why: ``approval_denied``, ``approval_expired``, ``approval_used``,
    ``approval_mismatch`` (the request is not the approved call) or ``unknown_approval``.
    """

    status = 403
    error: ClassVar[str | None] = "approval_invalid"
    default_reason = Reason.APPROVAL_MISMATCH

    def __init__(
        self,
        description: str | None = None,
        *,
        approval_id: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.approval_id = approval_id
        super().__init__(description, reason=reason)

    def body(self) -> dict[str, str]:
        body = super().body()
        if self.approval_id is not None:
            body["approval_id"] = self.approval_id
        return body


class ApprovalQueueFull(TooManyRequests):
    """429 ``too_many_requests`` (reason ``approval_queue_full``): the user already has
    ``ApprovalPolicy.max_pending`` calls waiting for approval; this one was not stored."""

    default_reason = Reason.APPROVAL_QUEUE_FULL
    retry_after: ClassVar[int] = 60
