"""AuditWriter: the one path from a decision to an AuditStore.

It fails closed: if the store refuses or times out, :class:`~agentguard.errors.AuditUnavailable`
(503) is raised, so the guard never lets an action through that it could not record.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import anyio

from agentguard.errors import AgentGuardError, AuditUnavailable

if TYPE_CHECKING:
    from agentguard.audit.chain import AuditEntry
    from agentguard.audit.events import AuditEvent
    from agentguard.storage.protocols import AuditStore

__all__ = ["AuditWriter"]

logger = logging.getLogger("agentguard.audit")


class AuditWriter:
    """Appends events to an :class:`~agentguard.storage.AuditStore`, failing closed.

    Args:
        store: where events go.
        instance: a name for this process, written into every event (``"api-1"``).
        timeout: seconds an append may take before the request is refused with 503. ``None``
            (the default) leaves timing out to the store's driver (every backend we ship sets
            one); a timeout here costs a cancel scope per event, about 25 µs on asyncio.
    """

    def __init__(
        self, store: AuditStore, *, instance: str | None = None, timeout: float | None = None
    ) -> None:
        self.store = store
        self.instance = instance
        self.timeout = timeout

    async def record(self, event: AuditEvent) -> AuditEntry:
        """Append ``event``; return its entry once the store acknowledged it."""
        if self.instance is not None and event.instance is None:
            event = dataclasses.replace(event, instance=self.instance)
        try:
            if self.timeout is None:
                entries = await self.store.append([event])
            else:
                with anyio.fail_after(self.timeout):
                    entries = await self.store.append([event])
        except AgentGuardError:
            raise
        except Exception as exc:
            logger.error("audit append failed: %s", type(exc).__name__)
            raise AuditUnavailable() from exc
        return entries[0]

    def __repr__(self) -> str:
        return f"AuditWriter(store={type(self.store).__name__}, instance={self.instance!r})"
