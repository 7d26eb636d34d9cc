"""An operator's decision on a held-back call: approve or deny, once, audited.

The CLI (``agentguard approvals approve|deny``) and the operator listener's JSON endpoint both
come here, so a decision is taken and recorded the same way wherever it is made.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agentguard._clock import Clock
from agentguard._model import ApprovalRecord
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.audit._writer import AuditWriter
from agentguard.errors import AgentGuardError, Reason, UsageError
from agentguard.storage._gate_protocols import ApprovalStore

if TYPE_CHECKING:
    from agentguard.approvals._notify import ApprovalNotifier

__all__ = ["ApprovalNotPending", "UnknownApproval", "decide"]

logger = logging.getLogger("agentguard.approvals")


class ApprovalNotPending(AgentGuardError):
    """The approval cannot be decided: it was approved, denied or used already, or expired.

    Attributes:
        approval_id: the approval named.
        state: what it is now (``approved``, ``denied``, ``consumed``, ``expired``), or
            ``None`` when no approval has this id (:class:`UnknownApproval`).
    """

    def __init__(self, approval_id: str, state: str | None) -> None:
        self.approval_id = approval_id
        self.state = state
        if state is None:
            message = f"no approval {approval_id!r}"
        elif state == "expired":
            message = f"approval {approval_id!r} expired before it was decided"
        elif state == "consumed":
            message = f"approval {approval_id!r} was approved and used already"
        elif state == "pending":  # decided and then undone cannot happen; a race lost to expiry
            message = f"approval {approval_id!r} could not be decided; try again"
        else:
            message = f"approval {approval_id!r} was {state} already"
        super().__init__(message)


class UnknownApproval(ApprovalNotPending):
    """No approval has this id."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(approval_id, None)


async def decide(
    store: ApprovalStore,
    audit: AuditWriter,
    approval_id: str,
    *,
    approve: bool,
    by: str,
    clock: Clock,
    notifier: ApprovalNotifier | None = None,
    via: str | None = None,
    operator_id: str | None = None,
) -> ApprovalRecord:
    """Approve or deny the pending approval ``approval_id`` as operator ``by``; the record.

    Raises :class:`UnknownApproval` for an id no approval has, :class:`ApprovalNotPending` for
    one that was decided or used already or has expired. The decision is appended to the audit
    log (``approval.decide``: allow for approve, deny for deny, with the ids of who asked, the
    call's service, method and path, and ``approval_id`` and ``operator`` in the detail; never
    the body). It is taken before it is recorded, since only the store knows whether it took:
    if the audit store then refuses the event,
    :class:`~agentguard.errors.AuditUnavailable` is raised and the decision stands (the call
    it lets run is audited again, and refused while the audit store is down, when it runs).
    ``notifier`` is told after the event is recorded; its failure is logged, never raised.
    ``via`` (``"cli"``, ``"api"``) and ``operator_id`` (the operator token's id, on the
    operator listener) are added to the event's detail. ``by`` is 1 to 128
    characters (:class:`~agentguard.errors.UsageError` otherwise).
    """
    if not 0 < len(by) <= 128:
        raise UsageError("the operator's name is 1 to 128 characters")
    now = clock.now()
    record = await store.decide_approval(approval_id, approve=approve, by=by, now=now)
    if record is None:
        current = await store.get_approval(approval_id)
        if current is None:
            raise UnknownApproval(approval_id)
        raise ApprovalNotPending(approval_id, current.state(now))
    detail: dict[str, str | int | bool | None] = {"approval_id": record.id, "operator": by}
    if via is not None:
        detail["via"] = via
    if operator_id is not None:  # the token that decided: a name may be shared, an id is not
        detail["operator_id"] = operator_id
    await audit.record(
        AuditEvent(
            action=Action.APPROVAL_DECIDE,
            ts=now,
            decision=Decision.ALLOW if approve else Decision.DENY,
            reason=None if approve else Reason.APPROVAL_DENIED.value,
            user_id=record.user_id,
            workspace_id=record.workspace_id,
            account_id=record.account_id,
            key_id=record.key_id,
            family_id=record.family_id,
            service=record.service,
            method=record.method,
            path=record.path,
            detail=detail,
        )
    )
    if notifier is not None:
        event = "approval.approved" if approve else "approval.denied"
        try:
            notifier.notify(event, record)
        except Exception as error:  # a notification is a courtesy; the decision is made
            logger.error("approval notifier failed: %s", type(error).__name__)
    return record
