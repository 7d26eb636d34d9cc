"""Key rotation for connected accounts: every connection re-sealed under the primary key.

A connection is re-sealed on each refresh, but one whose token never expires, or whose user
makes no call, would stay under the old key-encryption key, and dropping that key would leave
it unopenable. :func:`reseal_connections` moves every row under the key ring's primary key,
one compare-and-set per row (a refresh or reconnect racing it wins; the row is read again and
moved if it still needs it). Nothing else changes: not ``updated_at`` (renewal timing reads
it), not the status, not the tokens. A row that does not open is left as it is and named in
the report: the operator keeps the old key until it is mended or its user reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from agentguard._model import ConnectedAccount, ConnectionStatus
from agentguard.connect._sealing import ConnectionSealer, SealBroken
from agentguard.storage._connection_protocols import ConnectionStore
from agentguard.storage._outage import store_outage

__all__ = ["ConnectionsResealed", "reseal_connections"]

logger = logging.getLogger("agentguard.connect")

_ROLE = "connection store"
_ATTEMPTS = 5


@dataclass
class ConnectionsResealed:
    """What :func:`reseal_connections` did.

    Attributes:
        rewritten: connections moved under the primary key.
        unopenable: ids of connections that do not open with the configured keys (left under
            their key; refused ``connection_broken`` until their users reconnect).
        busy: ids of connections that kept changing under every attempt (run it again).
    """

    rewritten: int = 0
    unopenable: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every connection is now under the primary key."""
        return not self.unopenable and not self.busy


def _moved(sealer: ConnectionSealer, record: ConnectedAccount) -> ConnectedAccount:
    """``record`` under the primary key, one version on; :class:`SealBroken` if it does not
    open."""
    moved = record.model_copy(update={"version": record.version + 1})
    if record.status is ConnectionStatus.BROKEN:  # holds no token: only its key id moves
        return moved.model_copy(update={"key_id": sealer.keyring.primary})
    access = sealer.open(record, "access")
    if access is None:  # the access slot always holds a ciphertext; for the type checker
        raise SealBroken(
            f"connection {record.id}: no access token", connection_id=record.id, cause="empty"
        )
    return sealer.seal(moved, access, sealer.open(record, "refresh"))


async def _reseal_one(
    store: ConnectionStore,
    sealer: ConnectionSealer,
    record: ConnectedAccount,
    report: ConnectionsResealed,
) -> bool:
    """Move one row, retrying a lost compare-and-set; ``True`` if it was written."""
    primary = sealer.keyring.primary
    current: ConnectedAccount | None = record
    for _ in range(_ATTEMPTS):
        if current is None or current.key_id == primary:  # disconnected, or renewed meanwhile
            return False
        try:
            moved = _moved(sealer, current)
        except SealBroken as broken:
            logger.error(
                "%s: connection %s of user %s does not open (%s): not re-encrypted; it is "
                "refused connection_broken until its user reconnects",
                current.service,
                current.id,
                current.user_id,
                broken.cause,
            )
            report.unopenable.append(current.id)
            return False
        with store_outage(_ROLE, "update_connection"):
            if await store.update_connection(moved, version=current.version):
                return True
        with store_outage(_ROLE, "get_connection"):
            current = await store.get_connection(current.service, current.user_id)
    if current is not None and current.key_id != primary:
        report.busy.append(current.id)
    return False


async def reseal_connections(
    store: ConnectionStore,
    sealer: ConnectionSealer,
    *,
    progress: Callable[[int], None] | None = None,
) -> ConnectionsResealed:
    """Re-seal every connection not under ``sealer``'s primary key; what was done.

    ``progress`` is called with the running count after each row written.
    """
    report = ConnectionsResealed()
    with store_outage(_ROLE, "list_connections"):
        rows = await store.list_connections()
    for row in rows:
        if await _reseal_one(store, sealer, row, report):
            report.rewritten += 1
            if progress is not None:
                progress(report.rewritten)
    return report
