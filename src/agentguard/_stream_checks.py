"""One re-check of an open stream, and the audit event of a cut.

:class:`StreamChecker` answers, for a :class:`~agentguard._stream_lease.StreamLease`, what a
new request with the stream's key would get now: nothing (the stream goes on), the refusal
(:class:`~agentguard.errors.InvalidToken` with the reason, or
:class:`~agentguard.errors.InsufficientScope` when the route's grant was lowered), or
:data:`OUTAGE` when the store could not say. The facts are the resolver's
(:func:`~agentguard._resolver.liveness_failure`), so a stream and a request never disagree.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from agentguard._keys._format import hash_key, parse_key
from agentguard._model import Principal
from agentguard._resolver import key_context, liveness_failure
from agentguard._stream_lease import StreamLease
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.errors import InsufficientScope, InvalidToken, MalformedKey, Reason, RequestRefused

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._model import Grants
    from agentguard._passage import Passage
    from agentguard.storage._revocation_feeds import Change

__all__ = [
    "OUTAGE",
    "Outage",
    "RecentChanges",
    "StreamChecker",
    "Verdict",
    "cut_event",
    "expired",
    "identity",
    "new_lease",
]

logger = logging.getLogger("agentguard.streams")


class Outage:
    """A re-check that could not decide (the store failed)."""

    def __repr__(self) -> str:
        return "OUTAGE"


OUTAGE = Outage()
Verdict = RequestRefused | Outage | None


class StreamChecker:
    """Re-checks leases against ``store`` (shielded: a failure is a ``StoreUnavailable``)."""

    def __init__(self, store: Any, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def check(self, lease: StreamLease) -> Verdict:
        """``None`` (still allowed), the refusal a new request would get, or :data:`OUTAGE`."""
        try:
            if lease.key_hash is None:
                return await self._directory(lease)
            return await self._key(lease, lease.key_hash)
        except Exception as error:  # StoreUnavailable, or a backend misbehaving: undecided
            logger.warning("a stream re-check failed: %s", type(error).__name__)
            return OUTAGE

    async def _key(self, lease: StreamLease, digest: bytes) -> RequestRefused | None:
        found = await self.store.lookup(digest)
        if found is None or not hmac.compare_digest(found.key.key_hash, digest):
            return InvalidToken(reason=Reason.UNKNOWN_KEY).with_context(**lease.ids())
        if lease.expires_at is None or found.key.expires_at < lease.expires_at:
            lease.expires_at = found.key.expires_at
        reason = liveness_failure(found, self.clock.now())
        if reason is not None or found.user is None:
            reason = reason or Reason.USER_DISABLED
            return InvalidToken(reason=reason).with_context(**key_context(found.key))
        return _authorize(lease, found.user.grants.narrow(found.key.scope))

    async def _directory(self, lease: StreamLease) -> RequestRefused | None:
        """A stream without an agentguard key (a token resolver's): its owner's facts."""
        user = await self.store.get_user(lease.user_id)
        account = await self.store.get_account(lease.account_id)
        member = await self.store.is_member(lease.user_id, lease.workspace_id)
        reason = None
        if account is None or not account.active:
            reason = Reason.ACCOUNT_CLOSED
        elif user is None or not user.enabled or user.account_id != lease.account_id:
            reason = Reason.USER_DISABLED
        elif not member:
            reason = Reason.NOT_A_MEMBER
        if reason is not None or user is None:
            return InvalidToken(reason=reason or Reason.USER_DISABLED).with_context(**lease.ids())
        return _authorize(lease, user.grants)


def _authorize(lease: StreamLease, grants: Grants) -> RequestRefused | None:
    needed = lease.requirement
    if needed is None or needed.service is None or grants.allows(needed.service, needed.level):
        return None
    return InsufficientScope(required=needed.scope).with_context(**lease.ids())


def expired(lease: StreamLease) -> RequestRefused:
    """The refusal of a stream whose key has expired."""
    return InvalidToken(reason=Reason.EXPIRED).with_context(**lease.ids())


def identity(lease: StreamLease) -> object:
    """What one look-up decides for: the key, or (without one) the owner and requirement."""
    if lease.key_hash is not None:
        return lease.key_hash
    return (lease.user_id, lease.workspace_id, lease.account_id, lease.requirement)


def new_lease(who: Passage | Principal, key: str | None) -> StreamLease:
    """The lease of a stream opened by ``who`` with ``key`` (only its SHA-256 is kept)."""
    if isinstance(who, Principal):
        principal, passage = who, None
    else:
        principal, passage = who.principal, who
    digest = None
    if key is not None and key.startswith("ag_"):
        with contextlib.suppress(MalformedKey):
            digest = hash_key(parse_key(key).value)
    request = None if passage is None else passage.request
    return StreamLease(
        principal.key_id,
        principal.user_id,
        principal.workspace_id,
        principal.account_id,
        family_id=principal.family_id,
        key_hash=digest,
        expires_at=principal.expires_at,
        requirement=None if passage is None else passage.requirement,
        request_id=None if request is None else request.request_id,
        method=None if request is None else request.method,
        path=None if request is None else request.audit_path,
        service=None if passage is None else passage.service,
    )


def cut_event(lease: StreamLease, error: RequestRefused, trigger: str, clock: Clock) -> AuditEvent:
    """The audit event of cutting ``lease``: a ``guard.decision`` deny naming the stream's
    request and ids, ``detail`` = ``{"stream": "cut", "trigger": ..., "open_ms": ...}``."""
    open_ms = max(0, int((clock.monotonic() - lease.opened) * 1000))
    ids = {**lease.ids(), **error.audit_context}
    return AuditEvent(
        action=Action.DECISION,
        ts=clock.now(),
        decision=Decision.DENY,
        reason=error.reason.value,
        user_id=ids.get("user_id"),
        workspace_id=ids.get("workspace_id"),
        account_id=ids.get("account_id"),
        key_id=ids.get("key_id"),
        family_id=ids.get("family_id"),
        service=lease.service,
        method=lease.method,
        path=lease.path,
        status=error.status,
        request_id=lease.request_id,
        detail={"stream": "cut", "trigger": trigger, "open_ms": open_ms},
    )


class RecentChanges:
    """When each id was last named by a revocation event, and when an event last named no one,
    for the first check of a stream whose lease is taken after its request was decided.

    At most ``size`` ids are remembered; forgetting one (the least recently named) is noted,
    so that a stream opened while that may matter is checked soon rather than an interval
    later. Safe to call from any thread (feeds deliver from theirs).
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._named: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._everything = float("-inf")
        self._forgotten = float("-inf")  # when the most recently forgotten id was named
        self._lock = threading.Lock()

    def note(self, change: Change, at: float) -> None:
        """Remember that ``change`` arrived at ``at`` (monotonic seconds)."""
        with self._lock:
            if change.everything:
                self._everything = max(self._everything, at)
            for named in change.ids:
                self._named[named] = at
                self._named.move_to_end(named)
            while len(self._named) > self.size:
                _, dropped = self._named.popitem(last=False)
                self._forgotten = max(self._forgotten, dropped)

    def since(self, lease: StreamLease, at: float) -> tuple[bool, bool]:
        """Whether, since ``at``, an event named one of ``lease``'s ids, and whether one named
        no one (or an id was forgotten)."""
        with self._lock:
            named = any(
                self._named.get((field, value), float("-inf")) >= at
                for field, value in lease.ids().items()
            )
            vague = self._everything >= at or self._forgotten >= at
        return named, vague
