"""Turning findings into audit events: reviewer, reason and fingerprints, never the content.

Also the small helpers the ASGI adapters share (media types), so they stay framework-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.review._base import Outcome, ReviewContext, Verdict

__all__ = ["MAX_FINGERPRINTS", "media_type", "record_findings", "verdict_event"]

MAX_FINGERPRINTS = 16


def verdict_event(verdict: Verdict, context: ReviewContext, ts: datetime) -> AuditEvent:
    """The ``review.verdict`` event for one finding.

    ``decision`` is ``deny`` for a block and ``allow`` otherwise (a redaction lets the content
    through, changed). ``detail`` holds the reviewer, the direction, the outcome and up to
    :data:`MAX_FINGERPRINTS` fingerprints (8 hex characters of SHA-256) of what was removed.
    """
    principal = context.principal
    shown = verdict.redacted[:MAX_FINGERPRINTS]
    return AuditEvent(
        action=Action.REVIEW,
        ts=ts,
        decision=Decision.DENY if verdict.outcome is Outcome.BLOCK else Decision.ALLOW,
        reason=verdict.reason,
        service=context.service,
        method=context.method,
        path=context.path,
        status=403 if verdict.outcome is Outcome.BLOCK else None,
        request_id=context.request_id,
        user_id=principal.user_id if principal else None,
        workspace_id=principal.workspace_id if principal else None,
        account_id=principal.account_id if principal else None,
        key_id=principal.key_id if principal else None,
        family_id=principal.family_id if principal else None,
        detail={
            "reviewer": verdict.reviewer,
            "direction": context.direction.value,
            "outcome": verdict.outcome.value,
            "redacted": len(verdict.redacted),
            "fingerprints": ",".join(shown) or None,
        },
    )


class _Recorder(Protocol):
    async def record(self, event: AuditEvent) -> object: ...


async def record_findings(
    audit: _Recorder, findings: Iterable[Verdict], context: ReviewContext, ts: datetime
) -> None:
    """Append one ``review.verdict`` event per finding to ``audit`` (an AuditWriter)."""
    for verdict in findings:
        await audit.record(verdict_event(verdict, context, ts))


def media_type(value: bytes | str | None) -> str:
    """``application/json`` from a ``Content-Type`` value such as ``Application/JSON; q=1``."""
    if value is None:
        return ""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return text.split(";", 1)[0].strip().lower()
