"""The operator's view of approvals: finding them by what they are now, and their JSON form.

Shared by ``agentguard approvals`` and the operator listener, so both show the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentguard._model import ApprovalRecord, ApprovalStatus
from agentguard.storage._gate_protocols import ApprovalStore

__all__ = ["APPROVAL_STATES", "approval_document", "find_approvals"]

APPROVAL_STATES = ("pending", "approved", "denied", "consumed", "expired")
"""What an approval can be now (:meth:`ApprovalRecord.state`): ``expired`` is not stored but
read from ``expires_at``, replacing ``pending`` and ``approved``."""


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def approval_document(record: ApprovalRecord, now: datetime) -> dict[str, Any]:
    """The JSON form of ``record`` as operators see it (``state`` as of ``now``).

    It includes the body preview, which the operator needs to decide; audit events never do.
    """
    return {
        "id": record.id,
        "state": record.state(now),
        "status": record.status.value,
        "user_id": record.user_id,
        "workspace_id": record.workspace_id,
        "account_id": record.account_id,
        "key_id": record.key_id,
        "family_id": record.family_id,
        "service": record.service,
        "scope": record.scope,
        "method": record.method,
        "path": record.path,
        "query": record.query,
        "body_digest": record.body_digest,
        "body_bytes": record.body_bytes,
        "body_preview": record.body_preview,
        "headers": record.headers,
        "rule_version": record.rule_version,
        "created_at": _instant(record.created_at),
        "expires_at": _instant(record.expires_at),
        "decided_at": _instant(record.decided_at),
        "decided_by": record.decided_by,
        "consumed_at": _instant(record.consumed_at),
    }


async def find_approvals(
    store: ApprovalStore,
    *,
    state: str | None = None,
    user_id: str | None = None,
    limit: int = 100,
    now: datetime,
) -> list[ApprovalRecord]:
    """At most ``limit`` approvals, newest first, that are in ``state`` at ``now``.

    ``state`` is one of :data:`APPROVAL_STATES` or ``None`` for all: ``pending`` leaves out the
    pending approvals that expired undecided, ``expired`` is those and the approved ones never
    used in time. Each stored status is asked for at most ``limit`` records, so when many
    expired approvals are newer than the live ones, fewer than ``limit`` may come back.
    """
    if state is not None and state not in APPROVAL_STATES:
        raise ValueError(f"an approval's state is one of {', '.join(APPROVAL_STATES)}")
    if state == "expired":
        stored: list[ApprovalStatus | None] = [ApprovalStatus.PENDING, ApprovalStatus.APPROVED]
    else:
        stored = [None if state is None else ApprovalStatus(state)]
    found: list[ApprovalRecord] = []
    for status in stored:
        found += await store.list_approvals(status=status, user_id=user_id, limit=limit)
    if state is not None:
        found = [record for record in found if record.state(now) == state]
    found.sort(key=lambda record: record.created_at, reverse=True)
    return found[:limit]
