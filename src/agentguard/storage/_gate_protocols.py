"""The storage contracts of the gates: approvals, operator tokens, budgets and rate limits.

Like :mod:`agentguard.storage._protocols`: small async Protocols, implemented structurally, each
method's docstring the guarantee a backend must give, checked by
``agentguard.testing.conformance`` (``ApprovalContract``, ``OperatorContract``,
``LimitContract``) against two instances of the backend sharing one database. Stores never read
the system time: every method that decides by time takes ``now``, and the one that does not
(:meth:`LimitStore.charge`, whose window the caller names) forgets by the ``Clock`` injected
into the store. Failures follow the same rules (:class:`~agentguard.storage.StorageError` for
an outage, never the driver's exception), and ``FailureContract`` calls these methods too.

The records (:class:`~agentguard.approvals.ApprovalRecord`,
:class:`~agentguard.approvals.OperatorRecord`, :class:`~agentguard.approvals.ApprovalStatus`)
are imported from :mod:`agentguard.approvals`. A backend stores every field and returns records
equal to the ones it was given: datetimes are timezone-aware UTC with microseconds, and
``OperatorRecord.token_hash`` is 32 raw bytes (keep it in a binary column; a digest is rarely
valid UTF-8, so ``model_dump_json()`` raises on it: serialise it yourself, as hex for instance).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

from agentguard._model import ApprovalRecord, ApprovalStatus, OperatorRecord

__all__ = ["ApprovalStore", "Charge", "LimitStore", "OperatorStore", "RateDecision"]


@runtime_checkable
class ApprovalStore(Protocol):
    """Approvals: created pending, decided once by an operator, consumed once by the agent."""

    async def create_approval(self, record: ApprovalRecord, *, now: datetime) -> ApprovalRecord:
        """Store ``record`` (status ``pending``) and return it, or return the approval that
        already stands for the same call.

        If a stored approval has the same ``binding``, status ``pending`` and
        ``expires_at > now``, nothing is stored and that approval is returned (an agent that
        sends the same held-back call again gets the same approval id, not a new request in the
        operator's queue). A duplicate ``id`` raises :class:`IntegrityError`.
        """
        ...

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        """The approval with this id, or ``None``."""
        ...

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> ApprovalRecord | None:
        """Approve or deny a pending approval; the updated record, or ``None`` if nothing
        changed.

        Only an approval with status ``pending`` and ``expires_at > now`` changes: its status
        becomes ``approved`` or ``denied``, ``decided_at`` becomes ``now`` and ``decided_by``
        ``by``. Atomic: of concurrent calls for one id (from any number of instances) at most
        one returns a record; the others return ``None``.
        """
        ...

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        """Use an approval for the one call it allows; ``True`` if this call may run.

        Succeeds only when the approval exists, its status is ``approved``, its ``binding``
        equals ``binding``, ``expires_at > now`` and it was never consumed: its status then
        becomes ``consumed`` and ``consumed_at`` becomes ``now``. Otherwise nothing changes and
        the result is ``False``. Of concurrent calls for one id, from any number of instances,
        at most one returns ``True``.
        """
        ...

    async def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        user_id: str | None = None,
        limit: int = 100,
    ) -> list[ApprovalRecord]:
        """At most ``limit`` approvals, newest ``created_at`` first, optionally filtered by the
        stored status and the user (expiry is not a stored status: callers read it).

        Approvals with equal ``created_at`` come newest stored first (the reverse of insertion
        order), as in our SQL stores (``ORDER BY created_at DESC, <insertion position> DESC``).
        """
        ...


@runtime_checkable
class OperatorStore(Protocol):
    """Operator token records (hashes only), for the operator listener's authentication."""

    async def put_operator(self, record: OperatorRecord) -> None:
        """Insert ``record``. A duplicate ``id`` or ``token_hash`` raises
        :class:`IntegrityError`.

        ``record.token_hash`` is the 32-byte SHA-256 digest of the token, as ``bytes``: store
        the bytes (a binary column), and match on them exactly.
        """
        ...

    async def lookup_operator(self, token_hash: bytes) -> OperatorRecord | None:
        """The record with this SHA-256 token hash (revoked or expired included), or ``None``.

        ``token_hash`` is the raw 32-byte digest (``bytes``), the same value
        ``OperatorRecord.token_hash`` holds.
        """
        ...

    async def revoke_operator(self, operator_id: str, *, now: datetime) -> bool:
        """Set ``revoked_at = now`` on an unrevoked record; ``True`` if one changed."""
        ...

    async def list_operators(self) -> list[OperatorRecord]:
        """Every record, oldest ``created_at`` first; records with equal ``created_at`` in
        insertion order (as in our SQL stores: ``ORDER BY created_at, <insertion position>``)."""
        ...


class Charge(NamedTuple):
    """The outcome of :meth:`LimitStore.charge`: whether the cost fitted, and the counter's
    total in this window after the call (unchanged when refused)."""

    allowed: bool
    used: int


class RateDecision(NamedTuple):
    """The outcome of :meth:`LimitStore.take`: whether a call may run now, and when not, how
    many seconds until it may (``0.0`` when allowed)."""

    allowed: bool
    retry_after: float


@runtime_checkable
class LimitStore(Protocol):
    """Budget counters and rate-limit buckets, shared by every instance; one round trip each."""

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Charge:
        """Add ``cost`` to ``counter`` if the total stays within ``limit``.

        ``counter`` names one budget window (the caller puts the window in the name), starting
        at 0. If ``used + cost <= limit`` the counter grows by ``cost`` and the result is
        ``Charge(True, used + cost)``; otherwise nothing changes and the result is
        ``Charge(False, used)``. Atomic across instances: concurrent charges never take the
        total above ``limit``, and every allowed charge is counted. ``cost`` may be 0 (a read
        of the counter that fails only when it is already above ``limit``). The counter may be
        forgotten once ``expires_at`` (the window's end) has passed.

        There is no ``now``: the caller's window is in ``counter`` and ``expires_at``. A store
        that sweeps ended windows compares ``expires_at`` with its own injected ``Clock``
        (never the database's or Redis's time), and never forgets a counter before its
        ``expires_at`` by that clock; a store that sets a relative TTL (Redis ``PX``) measures
        it from that clock too.
        """
        ...

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        """Take one call from a rate-limit ``bucket`` (GCRA, equivalent to a token bucket).

        The bucket allows one call per ``interval`` seconds on average and ``burst`` calls at
        once. It stores one instant, the theoretical arrival time ``tat`` (initially ``now``):
        with ``t = max(tat, now)``, the call is allowed when
        ``t + interval - now <= burst * interval``, and then ``tat`` becomes ``t + interval``;
        otherwise nothing changes and ``retry_after = t + interval - now - burst * interval``.
        Atomic across instances: of any number of concurrent calls at most ``burst`` are
        allowed on a fresh bucket. The bucket may be forgotten once ``tat`` has passed.

        Everything is computed in whole microseconds, so every backend agrees with the
        reference to the microsecond: ``now`` is ``(now - 1970-01-01T00:00:00Z) //
        timedelta(microseconds=1)`` (exact); ``interval`` becomes
        ``round(interval * 1_000_000)``, Python's :func:`round` of the float product (to the
        nearest integer, halves to even). :class:`ValueError` is raised, before any change,
        for an ``interval`` that is not finite or rounds below 1, a ``burst`` below 1, or
        ``interval_us * (burst + 1)`` above ``2**50`` (instants stay exact in int64 and in
        doubles). ``retry_after`` is the microsecond difference divided by ``1_000_000``. Our
        backends share these conversions (``agentguard.storage._gcra.interval_micros``).
        """
        ...
