"""The storage contracts of connected accounts: the connections, and the connect flow's
single-use records and refresh leases.

Like :mod:`agentguard.storage._gate_protocols`: small async Protocols, each method's docstring
the guarantee a backend gives, checked by ``agentguard.testing.conformance``
(``ConnectionContract``) against two instances of the backend sharing one database. Stores
never read the system time: methods that decide by time take ``now``. An outage raises
:class:`~agentguard.storage.StorageError`, never the driver's exception.

Records (:class:`~agentguard.connect.ConnectedAccount`, :class:`~agentguard.connect.ConnectFlow`)
are returned equal to the ones written: datetimes timezone-aware UTC with microseconds; ``bytes``
fields (ciphertexts, 32-byte hashes) in binary columns, byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from agentguard._model import ConnectedAccount, ConnectFlow, FlowKind

__all__ = ["ConnectFlowStore", "ConnectionStore"]


@runtime_checkable
class ConnectionStore(Protocol):
    """Connected accounts: at most one per (service, user), updated by compare-and-set."""

    async def put_connection(self, record: ConnectedAccount) -> None:
        """Store ``record`` as the connection of (``record.service``, ``record.user_id``),
        replacing any stored one (a reconnect). A duplicate ``id`` on another (service, user)
        raises :class:`IntegrityError`."""
        ...

    async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The connection of (service, user), whatever its status, or ``None``."""
        ...

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        """Replace the stored connection with ``record`` if, and only if, the stored one has the
        same ``service``, ``user_id`` and ``id`` and its ``version`` equals ``version``;
        ``True`` if it was replaced.

        ``record.version`` must be ``version + 1`` (:class:`ValueError` otherwise, before any
        change). Atomic across instances: of concurrent updates from the same ``version`` at
        most one returns ``True``. A connection deleted or reconnected (another ``id``)
        meanwhile is not touched.
        """
        ...

    async def delete_connection(
        self, service: str, user_id: str, *, connection_id: str | None = None
    ) -> ConnectedAccount | None:
        """Remove the connection of (service, user) and return it, or ``None`` if there was
        none. With ``connection_id``, only a stored connection with that ``id`` is removed."""
        ...

    async def list_connections(
        self, *, user_id: str | None = None, service: str | None = None
    ) -> list[ConnectedAccount]:
        """Every connection, optionally only one user's or one service's, ordered by
        ``(service, user_id)``."""
        ...


@runtime_checkable
class ConnectFlowStore(Protocol):
    """Single-use connect-flow records (tickets, OAuth states) and refresh leases."""

    async def put_flow(self, record: ConnectFlow) -> None:
        """Store ``record``. A duplicate ``id`` or ``token_hash`` raises
        :class:`IntegrityError`. The store may remove flows whose ``expires_at`` is at or
        before ``record.created_at``."""
        ...

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """Remove and return the flow with this ``token_hash`` and ``kind`` if
        ``expires_at > now``; else ``None``.

        Single use, atomic across instances: of concurrent takers of one flow at most one gets
        it. A flow of another kind with this hash is neither returned nor removed; an expired
        one may be removed.
        """
        ...

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        """The flow with this ``token_hash`` and ``kind`` if ``expires_at > now``, left where
        it is; else ``None``.

        Read only: nothing is removed, not even an expired flow, and a later
        :meth:`take_flow` still gets the flow. A flow of another kind with this hash is not
        returned. (The connect page shows whose link it is before anyone uses it.)
        """
        ...

    async def acquire_lease(
        self, name: str, *, holder: str, now: datetime, until: datetime
    ) -> bool:
        """Hold the lease ``name`` for ``holder`` until ``until``; ``True`` if held now.

        Granted when nobody holds it, when its holder's ``until`` is at or before ``now``, or
        when ``holder`` already holds it (extended to ``until``). Atomic across instances: at
        any ``now``, at most one holder is granted a lease that has not run out.
        """
        ...

    async def release_lease(self, name: str, *, holder: str) -> bool:
        """Release the lease if ``holder`` holds it; ``True`` if it was released."""
        ...
