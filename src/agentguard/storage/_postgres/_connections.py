"""ConnectionStore and ConnectFlowStore for :class:`PostgresStore`, as a mixin.

What holds across instances, and why (every statement under READ COMMITTED, which the store
pins):

- ``put_connection`` is one ``INSERT ... ON CONFLICT (service, user_id) DO UPDATE``: a reconnect
  replaces the slot's row; an id another slot holds breaks the unique index on ``id``.
- ``update_connection`` is one conditional ``UPDATE ... WHERE id, service, user_id, version``:
  a concurrent update waits for the row lock, then re-checks the committed row and matches
  nothing, so of concurrent updates from one version one wins.
- ``take_flow`` is one ``DELETE ... RETURNING``: of concurrent takers one gets the row;
  ``peek_flow`` one ``SELECT``.
- ``acquire_lease`` is one ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE`` the lease has
  run out or is the holder's own ``RETURNING``: the conflicting row is locked and its newest
  committed holder decides.

Instants are the callers' ``now``, never the server's clock. ``put_flow`` forgets up to 64 flows
that expired at or before the new flow's ``created_at``; ``take_flow`` removes an expired flow
it finds (and returns ``None``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._clock import utc
from agentguard._model import ConnectedAccount, ConnectFlow, FlowKind
from agentguard.storage._connection_rows import ConnectionCodec, check_next_version

if TYPE_CHECKING:
    from agentguard.storage._postgres._connection_queries import ConnectionQueries

__all__ = ["PostgresConnections"]

T = TypeVar("T")

_CODEC = ConnectionCodec(utc, utc)


class PostgresConnections:
    """Connected accounts' storage methods; :class:`PostgresStore` supplies pool and statements."""

    if TYPE_CHECKING:
        _connection_queries: ConnectionQueries

        async def _write(self, work: Callable[[Any], Awaitable[T]], broken: str = ...) -> T: ...

        async def _fetchrow(self, query: str, *args: Any) -> Any: ...

        async def _fetch(self, query: str, *args: Any) -> list[Any]: ...

    # ConnectionStore

    async def put_connection(self, record: ConnectedAccount) -> None:
        """Store ``record`` in its (service, user) slot, replacing the one there: one upsert.
        A duplicate ``id`` on another slot raises ``IntegrityError``."""
        params = _CODEC.connection_params(record)
        query = self._connection_queries.connection_put
        await self._write(lambda c: c.execute(query, *params), "duplicate connection id")

    async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The connection of (service, user), whatever its status, or ``None``."""
        row = await self._fetchrow(self._connection_queries.connection_get, service, user_id)
        return None if row is None else _CODEC.connection_from_row(row)

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        """Replace the stored connection if its id and ``version`` match: one conditional
        ``UPDATE``, so of concurrent updates from one version (any instances) one wins."""
        check_next_version(record, version)
        params = _CODEC.connection_params(record)
        query = self._connection_queries.connection_update
        won = await self._write(lambda c: c.fetchval(query, *params, version))
        return bool(won)

    async def delete_connection(
        self, service: str, user_id: str, *, connection_id: str | None = None
    ) -> ConnectedAccount | None:
        """Remove and return the connection of (service, user) (only one with that id)."""
        query = self._connection_queries.connection_delete
        row = await self._write(lambda c: c.fetchrow(query, service, user_id, connection_id))
        return None if row is None else _CODEC.connection_from_row(row)

    async def list_connections(
        self, *, user_id: str | None = None, service: str | None = None
    ) -> list[ConnectedAccount]:
        """Every connection (one user's, one service's), ordered by (service, user_id)."""
        rows = await self._fetch(self._connection_queries.connection_list, service, user_id)
        return [_CODEC.connection_from_row(row) for row in rows]

    # ConnectFlowStore

    async def put_flow(self, record: ConnectFlow) -> None:
        """Store ``record``; a duplicate id or token hash raises ``IntegrityError``. The same
        statement forgets up to 64 flows that expired at or before ``record.created_at``."""
        params = _CODEC.flow_params(record)
        query = self._connection_queries.flow_put
        await self._write(
            lambda c: c.execute(query, *params), "duplicate connect flow id or token hash"
        )

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """Remove and return the unexpired flow of this hash and kind: one ``DELETE ...
        RETURNING``, so of concurrent takers (any instances) one gets it."""
        now = utc(now)
        wanted = FlowKind(kind).value
        query = self._connection_queries.flow_take
        row = await self._write(lambda c: c.fetchrow(query, bytes(token_hash), wanted))
        flow = None if row is None else _CODEC.flow_from_row(row)
        return flow if flow is not None and flow.expires_at > now else None

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """The unexpired flow of this hash and kind, left in place: one ``SELECT``."""
        now = utc(now)
        wanted = FlowKind(kind).value
        query = self._connection_queries.flow_find
        row = await self._fetchrow(query, bytes(token_hash), wanted)
        flow = None if row is None else _CODEC.flow_from_row(row)
        return flow if flow is not None and flow.expires_at > now else None

    async def acquire_lease(
        self, name: str, *, holder: str, now: datetime, until: datetime
    ) -> bool:
        """Hold ``name`` for ``holder`` until ``until`` if it is free, run out, or theirs: one
        upsert, so at any ``now`` one holder (any instances) has a lease that has not run out."""
        query = self._connection_queries.lease_acquire
        at, ends = utc(now), utc(until)
        granted = await self._write(lambda c: c.fetchval(query, name, holder, at, ends))
        return bool(granted)

    async def release_lease(self, name: str, *, holder: str) -> bool:
        """Release ``name`` if ``holder`` holds it; ``True`` if it was released."""
        query = self._connection_queries.lease_release
        released = await self._write(lambda c: c.fetchval(query, name, holder))
        return bool(released)
