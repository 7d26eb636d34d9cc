"""The approval step of the pipeline: hold a call for a human, run the approved call once.

It runs after the live checks (the key, the user, the grants, all decided again on the retry),
with the whole body in hand. A call without an ``AgentGuard-Approval`` header is stored as a
pending approval and refused (403 ``approval_required``); the same call sent again gets the
same approval. A call naming an approval runs only when that approval is approved, unexpired,
never used, and bound to exactly this call (key family, user, service, method, target, body and
its type, rule version). The approval is verified first, then the budgets are charged, then it
is consumed, atomically, so of two instances racing the same approval one wins, and a call the
budgets refuse leaves its approval usable after the reset. Every outcome is audited with the
approval id.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from agentguard._model import ApprovalRecord, ApprovalStatus
from agentguard.approvals._binding import (
    Placement,
    binding,
    body_digest,
    bound_headers,
    bound_target,
    display_headers,
    display_query,
    preview,
)
from agentguard.approvals._errors import (
    APPROVAL_HEADER,
    ApprovalInvalid,
    ApprovalQueueFull,
    ApprovalRequired,
)
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.errors import InvalidRequest, Reason, RequestRefused
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:
    from datetime import datetime

    from agentguard._clock import Clock
    from agentguard._model import Principal
    from agentguard._permissions import Requirement
    from agentguard._request import GuardRequest
    from agentguard.approvals._policy import ApprovalPolicy
    from agentguard.audit._writer import AuditWriter
    from agentguard.storage._gate_protocols import ApprovalStore

__all__ = ["ApprovalStep", "Approved", "Call", "new_approval_id"]

logger = logging.getLogger("agentguard.approvals")
_HEADER = APPROVAL_HEADER.encode()
_APPROVAL_ID = re.compile(rb"apr_[A-Za-z0-9_-]{22}\Z")
_REFUSALS = {
    "denied": Reason.APPROVAL_DENIED,
    "expired": Reason.APPROVAL_EXPIRED,
    "consumed": Reason.APPROVAL_USED,
}
_NO_RULE = "0" * 32
_METHOD = re.compile(r"[A-Z0-9!#$%&'*+.^_`|~-]{1,32}\Z")
_SHOWN = 1024  # the longest path or query an operator is shown (and so may approve)
_SHOWN_HEADERS = 4096  # the most of the bound headers an operator is shown


class Call(NamedTuple):
    """The call the step decides: the request, who sent it, what its rule asks."""

    request: GuardRequest
    principal: Principal
    requirement: Requirement


class Approved(NamedTuple):
    """An approval verified for one call (approved, unexpired, bound to it), not yet used."""

    record: ApprovalRecord
    binding: str


def new_approval_id() -> str:
    """A fresh approval id: ``apr_`` and 128 random bits."""
    return "apr_" + secrets.token_urlsafe(16)


def _showable(request: GuardRequest) -> None:
    """Refuse (400) a call an operator could not be shown whole: a method that is not a short
    token, a path or query longer than the operator listing shows."""
    if not _METHOD.match(request.method):
        raise InvalidRequest("the request method is not a short HTTP method token")
    raw = request.raw_path if request.raw_path is not None else request.path.encode()
    if len(raw) > _SHOWN or len(request.query_string) > _SHOWN:
        raise InvalidRequest(
            "a call held for approval is shown to an operator whole: its path and its query "
            f"must each be at most {_SHOWN} bytes"
        )


class ApprovalStep:
    """Checks one held-back call against its approval (see the module docstring)."""

    __slots__ = ("_audit", "_clock", "_policy", "_store")

    def __init__(
        self, policy: ApprovalPolicy, store: ApprovalStore, audit: AuditWriter, clock: Clock
    ) -> None:
        self._policy = policy
        self._store = store
        self._audit = audit
        self._clock = clock

    @property
    def policy(self) -> ApprovalPolicy:
        """The settings this step runs with."""
        return self._policy

    @property
    def store(self) -> ApprovalStore:
        """Where the approvals live."""
        return self._store

    async def check(self, call: Call, body: bytes, placement: Placement | None = None) -> Approved:
        """The approval this call may use, verified but not yet consumed; or the refusal.

        ``placement`` names the field a vendor-native placement put the key in (left out).
        Refusals are audited here, with the approval id. Call :meth:`consume` next, once the
        budgets have been charged: a budget refusal then leaves the approval usable.
        """
        request, principal, requirement = call
        headers = bound_headers(request, placement)
        bound = binding(
            family_id=principal.family_id,
            user_id=principal.user_id,
            service=requirement.service,
            method=request.method,
            target=bound_target(request, placement),
            digest=body_digest(body),
            rule_version=requirement.rule or _NO_RULE,
            content_type=b",".join(request.header_values(b"content-type")) or None,
            headers=headers,
        )
        named = request.header_values(_HEADER)
        if not named:
            await self._hold(call, body, bound, display_headers(headers))
        if len(named) > 1 or not _APPROVAL_ID.match(named[0].strip()):
            await self._refuse(call, None, Reason.UNKNOWN_APPROVAL)
        return await self._verify(call, named[0].strip().decode("ascii"), bound)

    async def consume(self, approved: Approved, call: Call) -> None:
        """Use the approval for this call, atomically (one winner across instances), or refuse
        (``approval_used``, or ``approval_expired`` if it expired in between); audited."""
        record = approved.record
        now = self._clock.now()
        with store_outage("approval store"):
            won = await self._store.consume_approval(record.id, binding=approved.binding, now=now)
        if not won:  # another instance used it first, or it expired in between
            reason = Reason.APPROVAL_EXPIRED if record.expired(now) else Reason.APPROVAL_USED
            await self._refuse(call, record, reason)
        await self._audit.record(self._event(Action.APPROVAL_CONSUME, call, record.id))

    async def _hold(self, call: Call, body: bytes, bound: str, headers: str) -> NoReturn:
        """Store (or find) the pending approval for this call and refuse it."""
        request, principal, requirement = call
        _showable(request)
        if len(headers) > _SHOWN_HEADERS:
            raise InvalidRequest(
                "a call held for approval is shown to an operator whole: the headers it binds "
                f"(all but transport and per-attempt ones) must fit in {_SHOWN_HEADERS} bytes"
            )
        now = self._clock.now()
        await self._room(call, bound, now)
        record = ApprovalRecord(
            id=new_approval_id(),
            binding=bound,
            family_id=principal.family_id,
            key_id=principal.key_id,
            user_id=principal.user_id,
            workspace_id=principal.workspace_id,
            account_id=principal.account_id,
            service=requirement.service,
            scope=requirement.scope,
            method=request.method,
            path=request.audit_path,
            query=display_query(request),
            body_digest=body_digest(body),
            body_bytes=len(body),
            body_preview=preview(body),
            rule_version=requirement.rule or _NO_RULE,
            created_at=now,
            expires_at=now + self._policy.ttl,
            headers=headers,
        )
        with store_outage("approval store"):
            stored = await self._store.create_approval(record, now=now)
        fresh = stored.id == record.id
        refusal = ApprovalRequired(
            approval_id=stored.id,
            expires_at=stored.expires_at,
            status_uri=self._policy.uri(stored.id),
            reason=Reason.APPROVAL_REQUIRED if fresh else Reason.APPROVAL_PENDING,
        )
        action = Action.APPROVAL_REQUEST if fresh else Action.DECISION
        await self._audit.record(self._event(action, call, stored.id, refusal))
        if fresh:
            self._notify("approval.requested", stored)
        raise refusal

    async def _room(self, call: Call, bound: str, now: datetime) -> None:
        """Refuse a new held call when its user already has ``max_pending`` waiting (the same
        call again is let through: it gets its own approval back)."""
        limit = self._policy.max_pending
        with store_outage("approval store"):
            waiting = await self._store.list_approvals(
                status=ApprovalStatus.PENDING, user_id=call.principal.user_id, limit=limit + 1
            )
        live = [record for record in waiting if not record.expired(now)]
        if len(live) >= limit and all(record.binding != bound for record in live):
            refusal = ApprovalQueueFull()
            await self._audit.record(self._event(Action.DECISION, call, None, refusal))
            raise refusal

    async def _verify(self, call: Call, approval_id: str, bound: str) -> Approved:
        """The named approval if it is approved, unexpired and bound to this call; else refuse."""
        with store_outage("approval store"):
            record = await self._store.get_approval(approval_id)
        if record is None or record.user_id != call.principal.user_id:
            await self._refuse(call, None, Reason.UNKNOWN_APPROVAL)
        if record.binding != bound:
            await self._refuse(call, record, Reason.APPROVAL_MISMATCH)
        state = record.state(self._clock.now())
        if state == ApprovalStatus.PENDING.value:
            pending = ApprovalRequired(
                approval_id=record.id,
                expires_at=record.expires_at,
                status_uri=self._policy.uri(record.id),
                reason=Reason.APPROVAL_PENDING,
            )
            await self._audit.record(self._event(Action.DECISION, call, record.id, pending))
            raise pending
        if state in _REFUSALS:
            await self._refuse(call, record, _REFUSALS[state])
        return Approved(record, bound)

    async def _refuse(self, call: Call, record: ApprovalRecord | None, reason: Reason) -> NoReturn:
        approval_id = None if record is None else record.id
        refusal = ApprovalInvalid(approval_id=approval_id, reason=reason)
        await self._audit.record(self._event(Action.DECISION, call, approval_id, refusal))
        raise refusal

    def _event(
        self,
        action: Action,
        call: Call,
        approval_id: str | None,
        refusal: RequestRefused | None = None,
    ) -> AuditEvent:
        request, principal, requirement = call
        detail = {} if approval_id is None else {"approval_id": approval_id}
        return AuditEvent(
            action=action,
            ts=self._clock.now(),
            decision=Decision.ALLOW if refusal is None else Decision.DENY,
            reason=None if refusal is None else refusal.reason.value,
            user_id=principal.user_id,
            workspace_id=principal.workspace_id,
            account_id=principal.account_id,
            key_id=principal.key_id,
            family_id=principal.family_id,
            service=requirement.service,
            method=request.method,
            path=request.audit_path,
            status=None if refusal is None else refusal.status,
            request_id=request.request_id,
            detail=detail,
        )

    def _notify(self, event: str, record: ApprovalRecord) -> None:
        notifier = self._policy.notifier
        if notifier is None:
            return
        try:
            notifier.notify(event, record)
        except Exception:  # a notifier never fails a request
            logger.exception("the approval notifier failed; the approval stands")
