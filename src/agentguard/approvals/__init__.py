"""Approvals: a human says yes to one exact call before it runs (see docs/how-to/approvals.md).

A route rule with ``approval=`` holds matching calls. The first attempt is stored as a pending
:class:`ApprovalRecord` and refused with 403 ``approval_required`` naming the approval; an
operator approves or denies it (``agentguard approvals approve ID``, or the operator
listener's JSON endpoint, authenticated by operator tokens); the agent sends the same call again
with ``AgentGuard-Approval: <id>``, and it runs once, if every bound field matches and the
user's live state still allows it.
"""

from agentguard._model import ApprovalRecord, ApprovalStatus, OperatorRecord
from agentguard.approvals._decide import ApprovalNotPending, UnknownApproval, decide
from agentguard.approvals._errors import (
    APPROVAL_HEADER,
    ApprovalInvalid,
    ApprovalQueueFull,
    ApprovalRequired,
)
from agentguard.approvals._notify import ApprovalNotifier, WebhookNotifier, verify_webhook
from agentguard.approvals._operators import (
    AgentKeyRefused,
    authenticate_operator,
    issue_operator_token,
    revoke_operator_token,
)
from agentguard.approvals._policy import ApprovalPolicy

__all__ = [
    "APPROVAL_HEADER",
    "AgentKeyRefused",
    "ApprovalInvalid",
    "ApprovalNotPending",
    "ApprovalNotifier",
    "ApprovalPolicy",
    "ApprovalQueueFull",
    "ApprovalRecord",
    "ApprovalRequired",
    "ApprovalStatus",
    "OperatorRecord",
    "UnknownApproval",
    "WebhookNotifier",
    "authenticate_operator",
    "decide",
    "issue_operator_token",
    "revoke_operator_token",
    "verify_webhook",
]
