"""The gates' tables in memory: approvals, operator tokens, budget counters, rate buckets.

:class:`MemoryGates` is a mixin of :class:`~agentguard.storage.MemoryStore`, which gives it the
shared lock and a :class:`GateTables` on its shared backing (two instances over one backing
see one set of tables, as two processes see one database). Every method does its work under
that ``threading.Lock`` without awaiting inside, so each is atomic within one event loop,
across loops and across threads, like the rest of the store.

Budget counters are forgotten once their window's end has passed by the store's clock, rate
buckets once their theoretical arrival time has passed by the ``now`` a call brings; both
through a heap of expiries, oldest first, so memory stays bounded by the live windows.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field
from datetime import datetime

from agentguard._clock import Clock, utc
from agentguard._model import ApprovalRecord, ApprovalStatus, OperatorRecord
from agentguard.storage._gate_protocols import Charge, RateDecision
from agentguard.storage._gcra import check_units, epoch_micros, gcra, interval_micros
from agentguard.storage._protocols import IntegrityError

__all__ = ["GateTables", "MemoryGates"]


@dataclass(eq=False)
class GateTables:
    """The gates' "tables", shared by every instance over one backing."""

    approvals: dict[str, ApprovalRecord] = field(default_factory=dict)
    by_binding: dict[str, list[str]] = field(default_factory=dict)
    operators: dict[str, OperatorRecord] = field(default_factory=dict)
    operator_by_hash: dict[bytes, str] = field(default_factory=dict)
    counters: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    counter_expiries: list[tuple[datetime, str]] = field(default_factory=list)
    buckets: dict[str, int] = field(default_factory=dict)
    bucket_expiries: list[tuple[int, str]] = field(default_factory=list)


class MemoryGates:
    """ApprovalStore, OperatorStore and LimitStore over a :class:`GateTables` and one lock."""

    clock: Clock
    _lock: threading.Lock
    _gates: GateTables

    # ApprovalStore

    async def create_approval(self, record: ApprovalRecord, *, now: datetime) -> ApprovalRecord:
        """Store ``record``, or return the pending, unexpired approval with its binding."""
        now = utc(now)
        gates = self._gates
        with self._lock:
            for approval_id in gates.by_binding.get(record.binding, ()):
                standing = gates.approvals[approval_id]
                if standing.status is ApprovalStatus.PENDING and standing.expires_at > now:
                    return standing
            if record.id in gates.approvals:
                raise IntegrityError("duplicate approval id")
            gates.approvals[record.id] = record
            gates.by_binding.setdefault(record.binding, []).append(record.id)
            return record

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        """The approval with this id, or ``None``."""
        return self._gates.approvals.get(approval_id)

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> ApprovalRecord | None:
        """Approve or deny a pending, unexpired approval; ``None`` if nothing changed."""
        now = utc(now)
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        with self._lock:
            current = self._gates.approvals.get(approval_id)
            if (
                current is None
                or current.status is not ApprovalStatus.PENDING
                or not current.expires_at > now
            ):
                return None
            decided = current.model_copy(
                update={"status": status, "decided_at": now, "decided_by": by}
            )
            self._gates.approvals[approval_id] = decided
            return decided

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        """Mark an approved, unexpired approval with this binding consumed; ``True`` if so."""
        now = utc(now)
        with self._lock:
            current = self._gates.approvals.get(approval_id)
            if (
                current is None
                or current.status is not ApprovalStatus.APPROVED
                or current.binding != binding
                or not current.expires_at > now
            ):
                return False
            self._gates.approvals[approval_id] = current.model_copy(
                update={"status": ApprovalStatus.CONSUMED, "consumed_at": now}
            )
            return True

    async def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        user_id: str | None = None,
        limit: int = 100,
    ) -> list[ApprovalRecord]:
        """At most ``limit`` approvals, newest first, by stored status and user."""
        with self._lock:
            records = list(self._gates.approvals.values())
        chosen = [
            r
            for r in records
            if (status is None or r.status is status) and (user_id is None or r.user_id == user_id)
        ]
        chosen.reverse()  # newest stored first among equal ``created_at``, as the SQL stores
        chosen.sort(key=lambda r: r.created_at, reverse=True)
        return chosen[: max(0, limit)]

    # OperatorStore

    async def put_operator(self, record: OperatorRecord) -> None:
        """Insert ``record``; a duplicate id or token hash raises :class:`IntegrityError`."""
        gates = self._gates
        with self._lock:
            if record.id in gates.operators or record.token_hash in gates.operator_by_hash:
                raise IntegrityError("duplicate operator id or token hash")
            gates.operators[record.id] = record
            gates.operator_by_hash[record.token_hash] = record.id

    async def lookup_operator(self, token_hash: bytes) -> OperatorRecord | None:
        """The record with this token hash (revoked or expired included), or ``None``."""
        with self._lock:
            operator_id = self._gates.operator_by_hash.get(token_hash)
            return None if operator_id is None else self._gates.operators[operator_id]

    async def revoke_operator(self, operator_id: str, *, now: datetime) -> bool:
        """Set ``revoked_at = now`` on an unrevoked record; ``True`` if one changed."""
        now = utc(now)
        with self._lock:
            current = self._gates.operators.get(operator_id)
            if current is None or current.revoked_at is not None:
                return False
            self._gates.operators[operator_id] = current.model_copy(update={"revoked_at": now})
            return True

    async def list_operators(self) -> list[OperatorRecord]:
        """Every record, oldest first."""
        with self._lock:
            records = list(self._gates.operators.values())
        return sorted(records, key=lambda r: r.created_at)

    # LimitStore

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Charge:
        """Add ``cost`` to ``counter`` if the total stays within ``limit`` (atomic)."""
        check_units(cost, limit)
        expires_at = utc(expires_at)
        now = self.clock.now()
        gates = self._gates
        with self._lock:
            expiries = gates.counter_expiries
            while expiries and expiries[0][0] < now:  # forget the windows that have ended
                ended_at, name = heapq.heappop(expiries)
                held = gates.counters.get(name)
                if held is not None and held[1] == ended_at:
                    del gates.counters[name]
            used, until = gates.counters.get(counter, (0, expires_at))
            if used + cost > limit:
                return Charge(False, used)
            if cost:
                if expires_at > until or counter not in gates.counters:
                    until = expires_at
                    heapq.heappush(expiries, (until, counter))
                gates.counters[counter] = (used + cost, until)
            return Charge(True, used + cost)

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        """Take one call from ``bucket`` by GCRA in whole microseconds (atomic)."""
        interval_us = interval_micros(interval, burst)
        now_us = epoch_micros(now)
        gates = self._gates
        with self._lock:
            expiries = gates.bucket_expiries
            while expiries and expiries[0][0] <= now_us:  # forget buckets whose tat has passed
                tat, name = heapq.heappop(expiries)
                if gates.buckets.get(name) == tat:
                    del gates.buckets[name]
            step = gcra(gates.buckets.get(bucket), now_us, interval_us, burst)
            if step.allowed and step.tat is not None:
                gates.buckets[bucket] = step.tat
                heapq.heappush(expiries, (step.tat, bucket))
            return RateDecision(step.allowed, step.retry_after)
