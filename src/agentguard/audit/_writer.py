"""AuditWriter: the one path from a decision to an AuditStore.

By default it fails closed: if the store refuses or times out,
:class:`~agentguard.errors.AuditUnavailable` (503) is raised, so the guard never lets an action
through that it could not record. ``on_failure="buffer"`` is the documented opt-in for teams that
prefer availability: failed events wait in a bounded in-memory buffer and go out, in order and
ahead of new events, with the next append that succeeds. Buffered events are lost if the process
dies before then, and a full buffer refuses requests again.

With ``summaries`` (:class:`~agentguard.audit._aggregate.RefusalSummaries`), refusals that name
no one are counted by :meth:`AuditWriter.count_refusal` instead of appended one by one; their
summary events go out ahead of the next event appended after the interval ends, on
:meth:`AuditWriter.flush` (shutdown) and from :meth:`AuditWriter.run_summaries`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Literal, Protocol

import anyio

from agentguard.errors import AuditUnavailable, RequestRefused, UsageError

if TYPE_CHECKING:
    from agentguard.audit._aggregate import RefusalSummaries
    from agentguard.audit._chain import AuditEntry
    from agentguard.audit._events import AuditEvent
    from agentguard.storage._protocols import AuditStore

__all__ = ["AuditWriter"]

#: Raised on purpose and passed through as they are (a refusal such as a corrupt record, API
#: misuse); anything else the store raises, its StorageError included, is an outage.
_PASSED = (RequestRefused, UsageError)

logger = logging.getLogger("agentguard.audit")


class AppendObserver(Protocol):
    """Told of each append :meth:`AuditWriter.record` makes (telemetry sets one)."""

    def appended(self, started: float, ok: bool) -> None: ...


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
        summaries: counts refusals that name no one (``None``: every refusal is appended).
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        instance: str | None = None,
        timeout: float | None = None,
        on_failure: Literal["refuse", "buffer"] = "refuse",
        buffer_limit: int = 10_000,
        summaries: RefusalSummaries | None = None,
    ) -> None:
        if on_failure not in ("refuse", "buffer"):
            raise ValueError("on_failure is 'refuse' or 'buffer'")
        self.store = store
        self.instance = instance
        self.timeout = timeout
        self.on_failure = on_failure
        self.buffer_limit = buffer_limit
        self.summaries = summaries
        self._pending: deque[AuditEvent] = deque()
        self._pending_lock = threading.Lock()
        self.observer: AppendObserver | None = None
        """Times appends (:mod:`agentguard.telemetry`); ``None``: nothing is measured."""

    @property
    def pending(self) -> int:
        """How many events still wait for the store.

        In ``"refuse"`` mode only refusal summaries whose append failed wait here.
        """
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
        summaries = self.summaries
        due = self._due_summaries() if summaries is not None and summaries.due() else []
        with self._pending_lock:
            batch = [*self._pending, *due, event] if self._pending or due else [event]
            self._pending.clear()
        observer = self.observer
        started = time.perf_counter() if observer is not None else 0.0
        try:
            if self.timeout is None:  # no cancel scope to enter (see the class docstring)
                entries = await self.store.append(batch)
            else:
                entries = await self._append(batch)
        except Exception as exc:
            if observer is not None:
                observer.appended(started, False)
            if self.on_failure == "buffer" and not isinstance(exc, _PASSED):
                self._buffer(batch, exc)
                return None
            with self._pending_lock:
                self._pending.extendleft(reversed(batch[:-1]))
            if isinstance(exc, _PASSED):
                raise
            logger.error("audit append failed: %s", type(exc).__name__)
            raise AuditUnavailable() from exc
        if observer is not None:
            observer.appended(started, True)
        return entries[-1]

    def _named(self, event: AuditEvent) -> AuditEvent:
        if self.instance is not None and event.instance is None:
            return dataclasses.replace(event, instance=self.instance)
        return event

    def _due_summaries(self, *, force: bool = False) -> list[AuditEvent]:
        if self.summaries is None:
            return []
        return [self._named(event) for event in self.summaries.take(force=force)]

    async def count_refusal(
        self, *, source: str | None, reason: str, status: int, service: str | None = None
    ) -> None:
        """Count a refusal that names no one; append the summaries when they are due.

        Without ``summaries`` this is an error: the caller must record a full event instead.
        When the summaries are due they are appended now, failing like :meth:`record` (503 in
        ``"refuse"`` mode; they are kept and go out with the next append).
        """
        if self.summaries is None:
            raise RuntimeError("this AuditWriter counts no refusals (summaries=None)")
        summaries = self.summaries
        try:
            if summaries.due():  # the interval ended: close it before counting this one
                await self.flush_summaries()
        finally:
            summaries.add(source=source, reason=reason, status=status, service=service)
        if summaries.due():  # max_count reached
            await self.flush_summaries()

    async def flush_summaries(self, *, force: bool = False) -> int:
        """Append the summary events now if due (``force``: even mid-interval); return how many.

        Failing appends keep the events: they wait in the pending queue and go out, in order,
        with the next append that succeeds; the failure is raised as :meth:`record` raises it.
        """
        due = self._due_summaries(force=force)
        if not due:
            return 0
        with self._pending_lock:
            batch = [*self._pending, *due]
            self._pending.clear()
        try:
            await self._append(batch)
        except Exception as exc:
            with self._pending_lock:
                self._pending.extendleft(reversed(batch))
            if isinstance(exc, _PASSED):
                raise
            if self.on_failure == "buffer":
                logger.warning("refusal summaries buffered: %s", type(exc).__name__)
                return 0
            logger.error("audit append of refusal summaries failed: %s", type(exc).__name__)
            raise AuditUnavailable() from exc
        return len(due)

    async def run_summaries(self, every: float | None = None) -> None:
        """Append due summaries every ``every`` seconds (default: a quarter of the interval).

        Run it as a background task so an interval's summary is written when the interval
        ends even if no other event follows; failures are logged and retried next round.
        """
        if self.summaries is None:
            return
        # A quarter interval: a closed interval's summary is written at most that long after it
        # ends, so a crash loses the open interval and never more than a quarter of another.
        period = every if every is not None else self.summaries.policy.interval / 4
        while True:
            await anyio.sleep(period)
            try:
                await self.flush_summaries()
            except Exception as exc:  # the events stay pending; the next round retries
                logger.error("refusal summaries not written yet: %s", type(exc).__name__)

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
        """Append every buffered event and every refusal summary now; return how many went out.

        Raises if the append fails. Call it at shutdown: summaries of the open interval are
        written even though the interval has not ended.
        """
        due = self._due_summaries(force=True)
        with self._pending_lock:
            batch = [*self._pending, *due]
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
