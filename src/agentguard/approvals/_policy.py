"""How a guard handles calls its rules hold for approval: where approvals live, for how long."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from agentguard.errors import UsageError

if TYPE_CHECKING:
    from agentguard.approvals._notify import ApprovalNotifier
    from agentguard.storage._gate_protocols import ApprovalStore

__all__ = ["DEFAULT_APPROVAL_TTL", "DEFAULT_MAX_BODY", "DEFAULT_MAX_PENDING", "ApprovalPolicy"]

DEFAULT_APPROVAL_TTL = timedelta(hours=1)
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_MAX_PENDING = 20


@dataclass(frozen=True)
class ApprovalPolicy:
    """Settings of the approval step.

    Args:
        store: where approvals live, shared by every instance; ``None`` uses the guard's store
            (which must then implement :class:`~agentguard.storage.ApprovalStore`).
        ttl: how long an approval may wait for an operator and, once approved, for the agent's
            retry (both before one ``expires_at``).
        max_body: the largest body of a call held for approval (413 beyond it): the approval
            binds the exact body, so the whole body is read before the call is decided. The
            operator is shown up to 64 KiB of it (the default): raising it past that lets
            operators approve bytes they were not shown.
        max_pending: the most approvals one user may have waiting at once; a further held
            call (another call, not the same one again) is refused 429 until one is decided
            or expires, so an agent in a loop cannot flood the operators' queue or the store.
        status_uri: where agents poll an approval, with ``{id}`` for its id (the gateway sets
            ``<public origin>/oauth/approvals/{id}``); ``None`` leaves it out of the refusal, and
            :class:`~agentguard.client.AgentAuth` derives it from its token endpoint.
        notifier: told about every approval requested, approved or denied (for example a
            :class:`~agentguard.approvals.WebhookNotifier`); must never block.
    """

    store: ApprovalStore | None = None
    ttl: timedelta = DEFAULT_APPROVAL_TTL
    max_body: int = DEFAULT_MAX_BODY
    max_pending: int = DEFAULT_MAX_PENDING
    status_uri: str | None = None
    notifier: ApprovalNotifier | None = None

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise UsageError("an approval ttl is positive")
        if self.max_body < 0:
            raise UsageError("max_body is a byte count >= 0")
        if self.max_pending < 1:
            raise UsageError("max_pending is at least 1")
        if self.status_uri is not None and "{id}" not in self.status_uri:
            raise UsageError("status_uri needs an {id} placeholder")

    def uri(self, approval_id: str) -> str | None:
        """The status URI of one approval, or ``None``."""
        return None if self.status_uri is None else self.status_uri.replace("{id}", approval_id)
