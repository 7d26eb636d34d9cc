"""AuditWriter: the one path from a decision to an AuditStore.

By default it fails closed: if the store refuses or times out,
:class:`~agentguard.errors.AuditUnavailable` (503) is raised, so the guard never lets an action
through that it could not record. ``on_failure="buffer"`` is the documented opt-in for teams that
prefer availability: failed events wait in a bounded in-memory buffer and go out, in order and
ahead of new events, with the next append that succeeds. Buffered events are lost if the process
dies before then, and a full buffer refuses requests again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Literal

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
        on_failure: ``"refuse"`` (default, fail closed) or ``"buffer"`` (see the module doc).
        buffer_limit: most events held while the store is failing, in ``"buffer"`` mode.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        instance: str | None = None,
        timeout: float | None = None,
        on_failure: Literal["refuse", "buffer"] = "refuse",
        buffer_limit: int = 10_000,
    ) -> None:
        if on_failure not in ("refuse", "buffer"):
            raise ValueError("on_failure is 'refuse' or 'buffer'")
        self.store = store
        self.instance = instance
        self.timeout = timeout
        self.on_failure = on_failure
        self.buffer_limit = buffer_limit
        self._pending: deque[AuditEvent] = deque()
        self._pending_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """How many buffered events still wait for the store (always 0 in ``"refuse"`` mode)."""
        return len(self._pending)

    async def _append(self, events: list[AuditEvent]) -> list[AuditEntry]:
        if self.timeout is None:
            return await self.store.append(events)
        with anyio.fail_after(self.timeout):
            return await self.store.append(events)

    async def record(self, event: AuditEvent) -> AuditEntry | None:
        """Append ``event``; return its entry once the store acknowledged it.

        Returns ``None`` only in ``"buffer"`` mode, when the event was buffered instead.
        """
        if self.instance is not None and event.instance is None:
            event = dataclasses.replace(event, instance=self.instance)
        with self._pending_lock:
            batch = [*self._pending, event]
            self._pending.clear()
        try:
            entries = await self._append(batch)
        except Exception as exc:
            if self.on_failure == "buffer" and not isinstance(exc, AgentGuardError):
                self._buffer(batch, exc)
                return None
            with self._pending_lock:
                self._pending.extendleft(reversed(batch[:-1]))
            if isinstance(exc, AgentGuardError):
                raise
            logger.error("audit append failed: %s", type(exc).__name__)
            raise AuditUnavailable() from exc
        return entries[-1]

    def _buffer(self, batch: list[AuditEvent], exc: Exception) -> None:
        with self._pending_lock:
            if len(self._pending) + len(batch) > self.buffer_limit:
                self._pending.extendleft(reversed(batch[:-1]))
                logger.error("audit buffer full; refusing: %s", type(exc).__name__)
                raise AuditUnavailable() from exc
            self._pending.extendleft(reversed(batch))
        logger.warning(
            "audit append failed, %d events buffered: %s", len(self._pending), type(exc).__name__
        )

    async def flush(self) -> int:
        """Append every buffered event now; return how many went out (raises if it fails)."""
        with self._pending_lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return 0
        try:
            await self._append(batch)
        except Exception:
            with self._pending_lock:
                self._pending.extendleft(reversed(batch))
            raise
        return len(batch)

    def __repr__(self) -> str:
        return f"AuditWriter(store={type(self.store).__name__}, instance={self.instance!r})"
