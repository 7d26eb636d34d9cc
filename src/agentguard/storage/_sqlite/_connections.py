"""ConnectionStore and ConnectFlowStore for :class:`SQLiteStore`, as a mixin.

Every write is one ``BEGIN IMMEDIATE`` transaction, which holds the database's write lock from
its first statement, so a concurrent writer on the same file waits and then sees the committed
result:

- ``update_connection`` is one conditional ``UPDATE ... WHERE service, user_id, id, version``:
  of concurrent updates from one version, one matches.
- ``take_flow`` finds the flow and deletes it in one write transaction: of concurrent takers
  (any number of processes), one finds it. A hash no flow has is answered by a read alone
  (no write lock); ``peek_flow`` is a read.
- ``acquire_lease`` is one ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE`` the lease has
  run out or is the holder's own: one holder of a lease that has not run out.

Instants are the callers' ``now``, never the database's. ``put_flow`` forgets up to 64 flows
that expired at or before the new flow's ``created_at``; ``take_flow`` removes an expired flow
it finds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._clock import utc
from agentguard._model import ConnectedAccount, ConnectFlow, FlowKind
from agentguard.storage._connection_rows import ConnectionCodec, check_next_version
from agentguard.storage._sqlite import _connection_queries as sql
from agentguard.storage._sqlite._rows import from_micros, micros
from agentguard.storage._sqlite._transaction import immediate

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SQLiteConnections"]

T = TypeVar("T")
Row = tuple[Any, ...]

_CODEC = ConnectionCodec(micros, from_micros)


class SQLiteConnections:
    """Connected accounts' storage methods; :class:`SQLiteStore` supplies the connection."""

    if TYPE_CHECKING:

        async def _call(self, work: Callable[[sqlite3.Connection], T], broken: str = ...) -> T: ...

        async def _fetch_one(
            self, statement: str, params: Sequence[object] | dict[str, object]
        ) -> Row | None: ...

        async def _fetch_all(
            self, statement: str, params: Sequence[object] | dict[str, object]
        ) -> list[Row]: ...

    # ConnectionStore

    async def put_connection(self, record: ConnectedAccount) -> None:
        """Store ``record`` in its (service, user) slot, replacing the one there.

        One upsert on the slot; a duplicate ``id`` on another slot raises ``IntegrityError``.
        """
        params = _CODEC.connection_params(record)

        def work(connection: sqlite3.Connection) -> None:
            with immediate(connection):
                connection.execute(sql.CONNECTION_PUT, params)

        await self._call(work, "duplicate connection id")

    async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The connection of (service, user), whatever its status, or ``None``."""
        row = await self._fetch_one(sql.CONNECTION_GET, (service, user_id))
        return None if row is None else _CODEC.connection_from_row(row)

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        """Replace the stored connection if its id and ``version`` match: one conditional
        ``UPDATE`` under the write lock, so of concurrent updates from one version one wins."""
        check_next_version(record, version)
        columns = _CODEC.connection_params(record)
        params: dict[str, object] = {
            "id": columns[0],
            "service": columns[1],
            "user_id": columns[2],
            "status": columns[3],
            "access_token": columns[4],
            "refresh_token": columns[5],
            "expires_at": columns[6],
            "scopes": columns[7],
            "key_id": columns[8],
            "created_at": columns[9],
            "updated_at": columns[10],
            "version": columns[11],
            "expected": version,
        }

        def work(connection: sqlite3.Connection) -> bool:
            with immediate(connection):
                return connection.execute(sql.CONNECTION_UPDATE, params).rowcount == 1

        return await self._call(work)

    async def delete_connection(
        self, service: str, user_id: str, *, connection_id: str | None = None
    ) -> ConnectedAccount | None:
        """Remove and return the connection of (service, user) (only one with that id)."""
        slot = (service, user_id)

        def work(connection: sqlite3.Connection) -> Row | None:
            with immediate(connection):
                row: Row | None = connection.execute(sql.CONNECTION_GET, slot).fetchone()
                if row is None or (connection_id is not None and row[0] != connection_id):
                    return None
                connection.execute(sql.CONNECTION_DELETE, slot)
                return row

        row = await self._call(work)
        return None if row is None else _CODEC.connection_from_row(row)

    async def list_connections(
        self, *, user_id: str | None = None, service: str | None = None
    ) -> list[ConnectedAccount]:
        """Every connection (one user's, one service's), ordered by (service, user_id)."""
        rows = await self._fetch_all(sql.CONNECTION_LIST, {"service": service, "user_id": user_id})
        return [_CODEC.connection_from_row(row) for row in rows]

    # ConnectFlowStore

    async def put_flow(self, record: ConnectFlow) -> None:
        """Store ``record``; a duplicate id or token hash raises ``IntegrityError``.

        In the same transaction, forgets up to 64 flows that expired at or before
        ``record.created_at``.
        """
        params = _CODEC.flow_params(record)
        purge = (micros(record.created_at), sql.PURGE_BATCH)

        def work(connection: sqlite3.Connection) -> None:
            with immediate(connection):
                connection.execute(sql.FLOW_PURGE, purge)
                connection.execute(sql.FLOW_INSERT, params)

        await self._call(work, "duplicate connect flow id or token hash")

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """Remove and return the unexpired flow of this hash and kind: found and deleted in one
        write transaction, so of concurrent takers one gets it. An expired one is removed.

        A hash no flow has is answered by a plain read, without taking the write lock: a
        flood of made-up states costs no write transaction each.
        """
        find = (bytes(token_hash), FlowKind(kind).value)
        now = utc(now)

        def work(connection: sqlite3.Connection) -> Row | None:
            if connection.execute(sql.FLOW_FIND, find).fetchone() is None:
                return None
            with immediate(connection):  # found: find it again under the lock, and delete it
                row: Row | None = connection.execute(sql.FLOW_FIND, find).fetchone()
                if row is not None:
                    connection.execute(sql.FLOW_DELETE, (row[0],))
                return row

        row = await self._call(work)
        flow = None if row is None else _CODEC.flow_from_row(row)
        return flow if flow is not None and flow.expires_at > now else None

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """The unexpired flow of this hash and kind, left in place: one read."""
        find = (bytes(token_hash), FlowKind(kind).value)
        now = utc(now)
        row = await self._fetch_one(sql.FLOW_FIND, find)
        flow = None if row is None else _CODEC.flow_from_row(row)
        return flow if flow is not None and flow.expires_at > now else None

    async def acquire_lease(
        self, name: str, *, holder: str, now: datetime, until: datetime
    ) -> bool:
        """Hold ``name`` for ``holder`` until ``until`` if it is free, run out, or theirs: one
        upsert under the write lock."""
        params = {"name": name, "holder": holder, "until": micros(until), "now": micros(now)}

        def work(connection: sqlite3.Connection) -> bool:
            with immediate(connection):
                return connection.execute(sql.LEASE_ACQUIRE, params).rowcount == 1

        return await self._call(work)

    async def release_lease(self, name: str, *, holder: str) -> bool:
        """Release ``name`` if ``holder`` holds it; ``True`` if it was released."""

        def work(connection: sqlite3.Connection) -> bool:
            with immediate(connection):
                return connection.execute(sql.LEASE_RELEASE, (name, holder)).rowcount == 1

        return await self._call(work)
