"""ApprovalStore, OperatorStore and LimitStore for :class:`PostgresStore`, as a mixin.

What holds across instances, and why:

- ``create_approval`` takes a transaction-scoped advisory lock on the binding, then in one
  statement returns the pending, unexpired approval with that binding or inserts the new one;
  READ COMMITTED gives that statement a snapshot taken after the lock, so it sees an approval
  another instance committed while this one waited.
- ``decide_approval`` and ``consume_approval`` are single conditional ``UPDATE``\\ s: the row
  lock makes a concurrent call wait and re-check the committed row, so one wins.
- ``charge`` and ``take`` are one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` each: the
  conflicting row is locked and its newest committed value decides; the row keeps the outcome
  in ``allowed`` so the same statement reports it (and, when refused, the unchanged value).

Instants are the callers' ``now``, never the server's clock. Forgetting: ``take`` forgets up to
64 other buckets whose ``tat`` has passed (they decide exactly like fresh ones); ``charge``
forgets up to 64 other counters whose ``expires_at`` has passed by the store's clock (``charge``
takes no ``now``), never the one it charges. Approvals and operator records are kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._clock import utc
from agentguard._model import ApprovalRecord, ApprovalStatus, OperatorRecord
from agentguard.errors import UsageError
from agentguard.storage._gate_protocols import Charge, RateDecision
from agentguard.storage._gate_rows import GateCodec
from agentguard.storage._gcra import check_units, interval_micros, micros, retry_seconds

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard.storage._postgres._gate_queries import GateQueries

__all__ = ["PostgresGates"]

T = TypeVar("T")

_CODEC = GateCodec(utc, utc)
_MAX_DECIDED_BY = 128


class PostgresGates:
    """The gates' storage methods; :class:`PostgresStore` supplies the pool and statements."""

    if TYPE_CHECKING:
        clock: Clock
        schema: str
        _gate_queries: GateQueries

        async def _write(self, work: Callable[[Any], Awaitable[T]], broken: str = ...) -> T: ...

        async def _fetchrow(self, query: str, *args: Any) -> Any: ...

        async def _fetch(self, query: str, *args: Any) -> list[Any]: ...

    # ApprovalStore

    async def create_approval(self, record: ApprovalRecord, *, now: datetime) -> ApprovalRecord:
        """Store ``record``, or return the pending, unexpired approval with its binding.

        Serialised per binding by an advisory lock held to the end of the transaction: of
        concurrent calls with one binding (any instances), one inserts and the others return
        its approval. A duplicate id raises ``IntegrityError``.
        """
        queries = self._gate_queries
        params = _CODEC.approval_params(record)
        lock = f"agentguard.approval:{self.schema}:{record.binding}"

        async def work(connection: Any) -> Any:
            async with connection.transaction():
                await connection.execute(queries.approval_lock, lock)
                return await connection.fetchrow(queries.approval_create, *params, utc(now))

        row = await self._write(work, "duplicate approval id")
        return record if row is None else _CODEC.approval_from_row(row)

    async def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        """The approval with this id, or ``None``."""
        row = await self._fetchrow(self._gate_queries.approval_get, approval_id)
        return None if row is None else _CODEC.approval_from_row(row)

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> ApprovalRecord | None:
        """Approve or deny a pending, unexpired approval; the updated record, or ``None``.

        One conditional ``UPDATE ... RETURNING``: of concurrent calls, one changes it.
        """
        if len(by) > _MAX_DECIDED_BY:
            raise UsageError(f"an operator name is at most {_MAX_DECIDED_BY} characters")
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        query = self._gate_queries.approval_decide
        row = await self._write(
            lambda c: c.fetchrow(query, approval_id, status.value, utc(now), by)
        )
        return None if row is None else _CODEC.approval_from_row(row)

    async def consume_approval(self, approval_id: str, *, binding: str, now: datetime) -> bool:
        """Mark an approved, unexpired, unconsumed approval with ``binding`` consumed.

        One conditional ``UPDATE``: of concurrent calls (any instances), one returns ``True``.
        """
        query = self._gate_queries.approval_consume
        won = await self._write(lambda c: c.fetchval(query, approval_id, binding, utc(now)))
        return bool(won)

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
        wanted = None if status is None else ApprovalStatus(status).value
        rows = await self._fetch(self._gate_queries.approval_list, wanted, user_id, limit)
        return [_CODEC.approval_from_row(row) for row in rows]

    # OperatorStore

    async def put_operator(self, record: OperatorRecord) -> None:
        """Insert ``record``; a duplicate id or token hash raises ``IntegrityError``."""
        params = _CODEC.operator_params(record)
        query = self._gate_queries.operator_insert
        await self._write(
            lambda c: c.execute(query, *params), "duplicate operator id or token hash"
        )

    async def lookup_operator(self, token_hash: bytes) -> OperatorRecord | None:
        """The record with this token hash (revoked or expired included), or ``None``."""
        row = await self._fetchrow(self._gate_queries.operator_lookup, bytes(token_hash))
        return None if row is None else _CODEC.operator_from_row(row)

    async def revoke_operator(self, operator_id: str, *, now: datetime) -> bool:
        """Set ``revoked_at = now`` on an unrevoked record; ``True`` if one changed."""
        query = self._gate_queries.operator_revoke
        changed = await self._write(lambda c: c.fetchval(query, operator_id, utc(now)))
        return bool(changed)

    async def list_operators(self) -> list[OperatorRecord]:
        """Every record, oldest ``created_at`` first (then in insertion order)."""
        rows = await self._fetch(self._gate_queries.operator_list)
        return [_CODEC.operator_from_row(row) for row in rows]

    # LimitStore

    async def charge(self, counter: str, *, cost: int, limit: int, expires_at: datetime) -> Charge:
        """Add ``cost`` to ``counter`` if the total stays within ``limit``: one statement.

        Concurrent charges (any instances) queue on the counter's row lock and each decides on
        the newest committed total, so the total never passes ``limit``. Also forgets up to 64
        other counters whose ``expires_at`` has passed by the store's clock.
        """
        if cost < 0:
            raise UsageError("a budget charge's cost must be zero or more")
        check_units(cost, limit)
        query = self._gate_queries.charge
        now = utc(self.clock.now())
        row = await self._write(
            lambda c: c.fetchrow(query, counter, cost, limit, utc(expires_at), now)
        )
        return Charge(bool(row[0]), int(row[1]))

    async def take(
        self, bucket: str, *, interval: float, burst: int, now: datetime
    ) -> RateDecision:
        """Take one call from ``bucket`` (GCRA in whole microseconds): one statement.

        Concurrent calls (any instances) queue on the bucket's row lock and each decides on the
        newest committed ``tat``: at most ``burst`` pass on a fresh bucket. Also forgets up to
        64 other buckets whose ``tat`` has passed ``now``.
        """
        step = interval_micros(interval, burst)
        at = micros(now)
        query = self._gate_queries.take
        row = await self._write(lambda c: c.fetchrow(query, bucket, at, step, burst * step))
        if row[0]:
            return RateDecision(True, 0.0)
        return RateDecision(False, retry_seconds(int(row[1]), at, step, burst))
