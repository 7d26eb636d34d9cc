"""The last step of every decision: its audit event, allowed or refused.

Refusals that name no one (no key, a malformed or unknown key) are counted per source and
interval (:mod:`agentguard.audit._aggregate`) unless the refused request carries a key the store
knows; refusals about a known key, and every allowed request, get an event of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentguard._keys._format import hash_key, parse_key
from agentguard._resolver import key_context
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.credentials._keyscan import KEY_SHAPE
from agentguard.errors import MalformedKey, Reason
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._model import Principal
    from agentguard._permissions import Requirement
    from agentguard._request import GuardRequest
    from agentguard.audit._writer import AuditWriter
    from agentguard.errors import RequestRefused
    from agentguard.storage._protocols import KeyStore
    from agentguard.telemetry._decision import DecisionTrace

__all__ = ["DecisionRecorder", "principal_ids"]

_IDENTITIES = ("key_id", "family_id", "user_id", "workspace_id", "account_id")
_NAMING_CANDIDATES = 8  # well-formed keys looked up per anonymous refusal, at most


def principal_ids(principal: Principal) -> dict[str, str | None]:
    """The audit ids of the key a decision is about (never its secret)."""
    return {
        "key_id": principal.key_id,
        "family_id": principal.family_id,
        "user_id": principal.user_id,
        "workspace_id": principal.workspace_id,
        "account_id": principal.account_id,
    }


class DecisionRecorder:
    """Appends one decision to the audit chain (or counts it, for a refusal about no one)."""

    __slots__ = ("_audit", "_clock", "_store")

    def __init__(self, audit: AuditWriter, clock: Clock, store: KeyStore) -> None:
        self._audit = audit
        self._clock = clock
        self._store = store

    async def allowed(
        self,
        request: GuardRequest,
        requirement: Requirement | None,
        started: float,
        principal: Principal,
        trace: DecisionTrace | None = None,
    ) -> None:
        """The hot path: one allow event, built directly (and noted in ``trace``, if any)."""
        clock = self._clock
        event = AuditEvent(
            Action.DECISION,
            clock.now(),
            Decision.ALLOW,
            None,
            principal.user_id,
            principal.workspace_id,
            principal.account_id,
            principal.key_id,
            principal.family_id,
            requirement.service if requirement is not None else None,
            request.method,
            request.audit_path,
            None,
            int((clock.monotonic() - started) * 1_000_000),
            request.request_id,
        )
        if trace is None:
            await self._audit.record(event)
        else:
            await trace.record(self._audit, event, requirement)

    async def refused(
        self,
        request: GuardRequest,
        requirement: Requirement | None,
        started: float | None,
        error: RequestRefused,
        principal: Principal | None = None,
        *,
        trace: DecisionTrace | None = None,
    ) -> None:
        """Audit a refusal: counted when it names no one, else one deny event (and end
        ``trace``, if any, with it).

        Rate-limit refusals are counted too, per key and interval: a flood of calls past a
        limit is what they are about, and must not flood the log in turn.
        """
        ids: dict[str, Any] = dict(error.audit_context)
        service = requirement.service if requirement is not None else None
        summaries = self._audit.summaries
        if error.reason is Reason.RATE_LIMITED and summaries is not None:
            key_id = principal.key_id if principal is not None else ids.get("key_id")
            await self._audit.count_refusal(
                source=f"key:{key_id}", reason=error.reason.value, status=error.status,
                service=service,
            )  # fmt: skip
            if trace is not None:
                trace.counted(error, service)
            return
        if (
            principal is None
            and summaries is not None
            and error.status < 500
            and not any(ids.get(name) for name in _IDENTITIES)
            and summaries.counts(error.reason.value)
            and not await self._names(request, ids)
        ):  # a refusal about no one: counted per source and interval, not one event each
            await self._audit.count_refusal(
                source=request.client,
                reason=error.reason.value,
                status=error.status,
                service=service,
            )
            if trace is not None:
                trace.counted(error, service)
            return
        if principal is not None:
            ids = principal_ids(principal)
        latency = None if started is None else int((self._clock.monotonic() - started) * 1_000_000)
        event = AuditEvent(
            action=Action.DECISION,
            ts=self._clock.now(),
            decision=Decision.DENY,
            reason=error.reason.value,
            service=service,
            method=request.method,
            path=request.audit_path,
            status=error.status,
            latency_us=latency,
            request_id=request.request_id,
            **ids,
        )
        if trace is None:
            await self._audit.record(event)
        else:
            await trace.record(self._audit, event, requirement)

    async def _names(self, request: GuardRequest, ids: dict[str, Any]) -> bool:
        """Whether a refused request carries a key the store knows; its ids go into ``ids``.

        A refusal before any key was resolved (an ambiguous path, two ``Authorization``
        headers, a key outside the credential position) may still hold someone's real key:
        that refusal is about them and gets its own event. Key-shaped strings that name no
        stored key are garbage, counted with the other anonymous refusals.
        """
        places = [request.path.encode("utf-8", "surrogateescape"), request.query_string]
        places += [value for _, value in request.headers]
        looked_up = 0
        for place in places:
            for shaped in KEY_SHAPE.findall(place):
                try:  # a checksum first: junk of the right shape costs no lookup
                    parsed = parse_key(shaped.decode("ascii"))
                except MalformedKey:
                    continue
                looked_up += 1
                if looked_up > _NAMING_CANDIDATES:
                    return False
                with store_outage():
                    found = await self._store.lookup(hash_key(parsed.value))
                if found is not None:
                    ids.update(key_context(found.key))
                    return True
        return False
