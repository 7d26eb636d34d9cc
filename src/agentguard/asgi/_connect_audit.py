"""How the connect pages audit a refusal: its own event when it used something up, else counted.

A refusal about a real link or authorization that used it up (the form, the callback) is a
``connection.refuse`` event with the user, the step and why: each takes a single-use record,
so one link or state makes a bounded number of them.

Every other refusal is counted per source and interval into the audit writer's refusal summary
(``guard.refusal_summary``) when the writer keeps one, as the proxy counts refusals of unknown
keys, so a flood appends one event per interval and source:

- those that name no one (a cross-site, malformed, oversized or stalled form, a page opened
  without a link, a callback whose query cannot be read or lacks its state or code, the
  binding cookie sent twice or next to a look-alike, a vendor error with no state of ours):
  anyone on the network can send them by the million;
- those that name a user but used nothing up (``counted=True``: the confirmation page, a
  signed-in user's form without a link): one link opened in a loop (a since-disabled user's,
  or at another service's page) would otherwise append an event a request while it lives.

Either way the status recorded is the status the browser was answered. A writer without a
summary appends every refusal as its own event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.connect._flow_errors import ConnectRefused

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._reasons import Reason
    from agentguard.asgi._types import Scope
    from agentguard.audit._writer import AuditWriter

__all__ = ["RefusalLog", "client_of"]


def client_of(scope: Scope) -> str | None:
    """The client's address, the source a refusal that names no one is counted under."""
    client = scope.get("client")
    return str(client[0]) if client else None


class RefusalLog:
    """Records the connect pages' refusals through ``audit``, stamped by ``clock``."""

    def __init__(self, audit: AuditWriter, clock: Clock) -> None:
        self.audit = audit
        self.clock = clock

    async def refuse(
        self,
        description: str,
        service: str,
        user_id: str | None,
        step: str,
        why: str,
        *,
        source: str | None = None,
        signed_in: str | None = None,
        counted: bool = False,
    ) -> ConnectRefused:
        """A :class:`ConnectRefused` (403) with ``description``, recorded."""
        error = ConnectRefused(description, service=service, user_id=user_id)
        await self.record(
            service, user_id, reason=error.reason, status=error.status, step=step, why=why,
            source=source, signed_in=signed_in, counted=counted,
        )  # fmt: skip
        return error

    async def record(
        self,
        service: str,
        user_id: str | None,
        *,
        reason: Reason,
        status: int,
        step: str,
        why: str,
        vendor_error: str | None = None,
        source: str | None = None,
        signed_in: str | None = None,
        counted: bool = False,
    ) -> None:
        """One ``connection.refuse`` event, or a count under ``source`` when it names no one
        or is ``counted`` (it used nothing up; see the module)."""
        audit = self.audit
        if (user_id is None or counted) and audit.summaries is not None:
            await audit.count_refusal(
                source=source, reason=reason.value, status=status, service=service
            )
            return
        detail: dict[str, str | int | bool | None] = {"step": step, "why": why}
        if vendor_error is not None:
            detail["vendor_error"] = vendor_error
        if signed_in is not None:
            detail["signed_in_user"] = signed_in[:128]
        await audit.record(
            AuditEvent(
                action=Action.CONNECTION_REFUSE,
                ts=self.clock.now(),
                decision=Decision.DENY,
                reason=reason.value,
                service=service,
                user_id=user_id,
                status=status,
                detail=detail,
            )
        )
