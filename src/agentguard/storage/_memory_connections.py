"""Connected accounts, connect flows and refresh leases in memory.

:class:`MemoryConnections` is a mixin of :class:`~agentguard.storage.MemoryStore`, which gives it
the shared lock and a :class:`ConnectionTables` on its shared backing (two instances over one
backing see one set of tables, as two processes see one database). Every method does its work
under that ``threading.Lock`` without awaiting inside, so each compare-and-set, take and lease
is atomic within one event loop, across loops and across threads.

Flows are forgotten once expired: ``put_flow`` drops those whose ``expires_at`` is at or before
the new flow's ``created_at`` (through a heap of expiries, oldest first), ``take_flow`` an
expired one it finds; ``peek_flow`` only reads.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field
from datetime import datetime

from agentguard._clock import utc
from agentguard._model import ConnectedAccount, ConnectFlow, FlowKind
from agentguard.storage._connection_rows import check_next_version
from agentguard.storage._protocols import IntegrityError

__all__ = ["ConnectionTables", "MemoryConnections"]

Slot = tuple[str, str]  # (service, user_id)


@dataclass(eq=False)
class ConnectionTables:
    """The connected accounts' "tables", shared by every instance over one backing."""

    connections: dict[Slot, ConnectedAccount] = field(default_factory=dict)
    connection_slots: dict[str, Slot] = field(default_factory=dict)  # by connection id
    flows: dict[str, ConnectFlow] = field(default_factory=dict)
    flow_by_hash: dict[bytes, str] = field(default_factory=dict)
    flow_expiries: list[tuple[datetime, str]] = field(default_factory=list)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # holder, until


class MemoryConnections:
    """ConnectionStore and ConnectFlowStore over a :class:`ConnectionTables` and one lock."""

    _lock: threading.Lock
    _connections: ConnectionTables

    # ConnectionStore

    async def put_connection(self, record: ConnectedAccount) -> None:
        """Store ``record`` in its (service, user) slot, replacing the one there.

        A duplicate ``id`` on another slot raises :class:`IntegrityError`.
        """
        tables = self._connections
        slot = (record.service, record.user_id)
        with self._lock:
            owner = tables.connection_slots.get(record.id)
            if owner is not None and owner != slot:
                raise IntegrityError("duplicate connection id")
            replaced = tables.connections.get(slot)
            if replaced is not None:
                del tables.connection_slots[replaced.id]
            tables.connections[slot] = record
            tables.connection_slots[record.id] = slot

    async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The connection of (service, user), whatever its status, or ``None``."""
        return self._connections.connections.get((service, user_id))

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        """Replace the stored connection if its id and ``version`` match (compare-and-set)."""
        check_next_version(record, version)
        tables = self._connections
        slot = (record.service, record.user_id)
        with self._lock:
            current = tables.connections.get(slot)
            if current is None or current.id != record.id or current.version != version:
                return False
            tables.connections[slot] = record
            return True

    async def delete_connection(
        self, service: str, user_id: str, *, connection_id: str | None = None
    ) -> ConnectedAccount | None:
        """Remove and return the connection of (service, user) (only one with that id)."""
        tables = self._connections
        slot = (service, user_id)
        with self._lock:
            current = tables.connections.get(slot)
            if current is None or (connection_id is not None and current.id != connection_id):
                return None
            del tables.connections[slot]
            del tables.connection_slots[current.id]
            return current

    async def list_connections(
        self, *, user_id: str | None = None, service: str | None = None
    ) -> list[ConnectedAccount]:
        """Every connection (one user's, one service's), ordered by (service, user_id)."""
        with self._lock:
            chosen = [
                record
                for slot, record in self._connections.connections.items()
                if (service is None or slot[0] == service)
                and (user_id is None or slot[1] == user_id)
            ]
        return sorted(chosen, key=lambda r: (r.service, r.user_id))

    # ConnectFlowStore

    def _forget_flow_locked(self, flow: ConnectFlow) -> None:
        del self._connections.flows[flow.id]
        del self._connections.flow_by_hash[flow.token_hash]

    async def put_flow(self, record: ConnectFlow) -> None:
        """Store ``record``; a duplicate id or token hash raises :class:`IntegrityError`.

        First forgets the flows that expired at or before ``record.created_at``.
        """
        tables = self._connections
        with self._lock:
            expiries = tables.flow_expiries
            while expiries and expiries[0][0] <= record.created_at:
                expired_at, flow_id = heapq.heappop(expiries)
                stale = tables.flows.get(flow_id)
                if stale is not None and stale.expires_at == expired_at:
                    self._forget_flow_locked(stale)
            if record.id in tables.flows or record.token_hash in tables.flow_by_hash:
                raise IntegrityError("duplicate connect flow id or token hash")
            tables.flows[record.id] = record
            tables.flow_by_hash[record.token_hash] = record.id
            heapq.heappush(expiries, (record.expires_at, record.id))

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """Remove and return the unexpired flow of this hash and kind (single use)."""
        now = utc(now)
        kind = FlowKind(kind)
        tables = self._connections
        with self._lock:
            flow_id = tables.flow_by_hash.get(bytes(token_hash))
            flow = None if flow_id is None else tables.flows[flow_id]
            if flow is None or flow.kind is not kind:
                return None
            self._forget_flow_locked(flow)
            return flow if flow.expires_at > now else None

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """The unexpired flow of this hash and kind, left in place (read only)."""
        now = utc(now)
        kind = FlowKind(kind)
        tables = self._connections
        with self._lock:
            flow_id = tables.flow_by_hash.get(bytes(token_hash))
            flow = None if flow_id is None else tables.flows[flow_id]
        if flow is None or flow.kind is not kind or not flow.expires_at > now:
            return None
        return flow

    async def acquire_lease(
        self, name: str, *, holder: str, now: datetime, until: datetime
    ) -> bool:
        """Hold ``name`` for ``holder`` until ``until`` if it is free, run out, or theirs."""
        now, until = utc(now), utc(until)
        leases = self._connections.leases
        with self._lock:
            current = leases.get(name)
            if current is not None and current[0] != holder and current[1] > now:
                return False
            leases[name] = (holder, until)
            return True

    async def release_lease(self, name: str, *, holder: str) -> bool:
        """Release ``name`` if ``holder`` holds it; ``True`` if it was released."""
        leases = self._connections.leases
        with self._lock:
            current = leases.get(name)
            if current is None or current[0] != holder:
                return False
            del leases[name]
            return True
