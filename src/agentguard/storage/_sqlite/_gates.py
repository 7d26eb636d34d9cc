"""ApprovalStore, OperatorStore and LimitStore for :class:`SQLiteStore`, as a mixin.

Every decision that must have one winner across processes (create an approval or return the
pending one, decide, consume, charge, take) is one ``BEGIN IMMEDIATE`` transaction: it holds
the database's write lock before it reads, so a concurrent writer on the same file waits and
then reads the committed result. Instants are the callers' ``now``, never the database's.

Forgetting: ``take`` forgets up to 64 other buckets whose ``tat`` has passed (such a bucket
decides exactly like a fresh one); ``charge`` forgets up to 64 other counters whose
``expires_at`` has passed by the store's clock (``charge`` takes no ``now``), never the one it
charges. Approvals and operator records are kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._model import ApprovalRecord, ApprovalStatus, OperatorRecord
from agentguard.errors import UsageError
from agentguard.storage._gate_protocols import Charge, RateDecision
from agentguard.storage._gate_rows import GateCodec
from agentguard.storage._gcra import check_units, gcra, interval_micros
from agentguard.storage._sqlite import _gate_queries as sql
from agentguard.storage._sqlite._rows import from_micros, micros
from agentguard.storage._sqlite._transaction import immediate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agentguard._clock import Clock

__all__ = ["SQLiteGates"]

T = TypeVar("T")
Row = tuple[Any, ...]

_CODEC = GateCodec(micros, from_micros)
_MAX_DECIDED_BY = 128


class SQLiteGates:
    """The gates' storage methods; :class:`SQLiteStore` supplies the connection."""

    if TYPE_CHECKING:
        clock: Clock

        async def _call(self, work: Callable[[sqlite3.Connection], T], broken: str = ...) -> T: ...

        async def _fetch_one(
            self, statement: str, params: Sequence[object] | dict[str, object]
        ) -> Row | None: ...

        async def _fetch_all(
            self, statement: str, params: Sequence[object] | dict[str, object]
        ) -> list[Row]: ...

    # ApprovalStore

    async def create_approval(self, record: ApprovalRecord, *, now: datetime) -> ApprovalRecord:
        """Store ``record``, or return the pending, unexpired approval with its binding.

        The look-up and the insert share one write transaction, so of concurrent calls with one
        binding (any number of processes) one inserts and the others return its approval.
        """
        params = _CODEC.approval_params(record)
        pending = (record.binding, micros(now))

        def work(connection: sqlite3.Connection) -> Row | None:
            with immediate(connection):
                row: Row | None = connection.execute(sql.APPROVAL_PENDING, pending).fetchone()
                if row is None:
                    connection.execute(sql.APPROVAL_INSERT, params)
                return row

        row = await self._call(work, "duplicate approval id")
        return record if row is None else _CODEC.approval_from_row(row)

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        """The approval with this id, or ``None``."""
        row = await self._fetch_one(sql.APPROVAL_GET, (approval_id,))
        return None if row is None else _CODEC.approval_from_row(row)

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> ApprovalRecord | None:
        """Approve or deny a pending, unexpired approval; the updated record, or ``None``.

        One conditional ``UPDATE`` under the write lock: of concurrent calls, one changes it.
        """
        if len(by) > _MAX_DECIDED_BY:
            raise UsageError(f"an operator name is at most {_MAX_DECIDED_BY} characters")
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        params = {"status": status.value, "now": micros(now), "by": by, "id": approval_id}

        def work(connection: sqlite3.Connection) -> Row | None:
            with immediate(connection):
                if connection.execute(sql.APPROVAL_DECIDE, params).rowcount != 1:
                    return None
                row: Row | None = connection.execute(sql.APPROVAL_GET, (approval_id,)).fetchone()
                return row

        row = await self._call(work)
        return None if row is None else _CODEC.approval_from_row(row)

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        """Mark an approved, unexpired, unconsumed approval with ``binding`` consumed.

        One conditional ``UPDATE`` under the write lock: of concurrent calls, one returns True.
        """
        params = {"id": approval_id, "binding": binding, "now": micros(now)}

        def work(connection: sqlite3.Connection) -> bool:
            with immediate(connection):
                return connection.execute(sql.APPROVAL_CONSUME, params).rowcount == 1

        return await self._call(work)

    async def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        user_id: str | None = None,
        limit: int = 100,
    ) -> list[ApprovalRecord]:
        """At most ``limit`` approvals, newest ``created_at`` first (then newest stored)."""
        if limit <= 0:
            return []
        params: dict[str, object] = {
            "status": None if status is None else ApprovalStatus(status).value,
            "user_id": user_id,
            "limit": limit,
        }
        rows = await self._fetch_all(sql.APPROVAL_LIST, params)
        return [_CODEC.approval_from_row(row) for row in rows]

    # OperatorStore

    async def put_operator(self, record: OperatorRecord) -> None:
        """Insert ``record``; a duplicate id or token hash raises ``IntegrityError``."""
        params = _CODEC.operator_params(record)

        def work(connection: sqlite3.Connection) -> None:
            with immediate(connection):
                connection.execute(sql.OPERATOR_INSERT, params)

        await self._call(work, "duplicate operator id or token hash")

    async def lookup_operator(self, token_hash: bytes) -> OperatorRecord | None:
        """The record with this token hash (revoked or expired included), or ``None``."""
        row = await self._fetch_one(sql.OPERATOR_LOOKUP, (bytes(token_hash),))
        return None if row is None else _CODEC.operator_from_row(row)

    async def revoke_operator(self, operator_id: str, *, now: datetime) -> bool:
        """Set ``revoked_at = now`` on an unrevoked record; ``True`` if one changed."""
        params = (micros(now), operator_id)

        def work(connection: sqlite3.Connection) -> bool:
            with immediate(connection):
                return connection.execute(sql.OPERATOR_REVOKE, params).rowcount == 1

        return await self._call(work)

    async def list_operators(self) -> list[OperatorRecord]:
        """Every record, oldest ``created_at`` first (then in insertion order)."""
        rows = await self._fetch_all(sql.OPERATOR_LIST, ())
        return [_CODEC.operator_from_row(row) for row in rows]

    # LimitStore

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Charge:
        """Add ``cost`` to ``counter`` if the total stays within ``limit``: one write transaction.

        The counter is read and written under the write lock, so concurrent charges from any
        number of processes never take it above ``limit``. Also forgets up to 64 other counters
        whose ``expires_at`` has passed by the store's clock.
        """
        if cost < 0:
            raise UsageError("a budget charge's cost must be zero or more")
        check_units(cost, limit)
        ends = micros(expires_at)
        purge = (micros(self.clock.now()), counter, sql.PURGE_BATCH)

        def work(connection: sqlite3.Connection) -> Charge:
            with immediate(connection):
                connection.execute(sql.COUNTER_PURGE, purge)
                row = connection.execute(sql.COUNTER_GET, (counter,)).fetchone()
                used = 0 if row is None else int(row[0])
                if used + cost > limit:
                    return Charge(False, used)
                if cost:
                    params = {"name": counter, "used": used + cost, "expires_at": ends}
                    connection.execute(sql.COUNTER_PUT, params)
                return Charge(True, used + cost)

        return await self._call(work)

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        """Take one call from ``bucket`` (GCRA in whole microseconds): one write transaction.

        Read and written under the write lock, so of concurrent calls from any number of
        processes at most ``burst`` pass on a fresh bucket. Also forgets up to 64 other
        buckets whose ``tat`` has passed ``now``.
        """
        step_us = interval_micros(interval, burst)
        now_us = micros(now)

        def work(connection: sqlite3.Connection) -> RateDecision:
            with immediate(connection):
                connection.execute(sql.BUCKET_PURGE, (now_us, bucket, sql.PURGE_BATCH))
                row = connection.execute(sql.BUCKET_GET, (bucket,)).fetchone()
                step = gcra(None if row is None else int(row[0]), now_us, step_us, burst)
                if step.allowed:
                    connection.execute(sql.BUCKET_PUT, (bucket, step.tat))
                return RateDecision(step.allowed, step.retry_after)

        return await self._call(work)
