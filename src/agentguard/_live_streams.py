"""Open streams kept live: re-checked on an interval and on revocation events, cut when invalid.

A request is decided when it arrives; a stream (SSE, a streamed response, a websocket) goes on
after that. Each open stream holds a :class:`~agentguard._stream_lease.StreamLease` from its
guard's :class:`LiveStreams`, which cuts the lease with the refusal a new request would get:

- at the key's expiry instant (a stream never outlives its access key);
- when a re-check finds the key revoked, the user disabled, the membership removed, the account
  closed or (when the lease carries the route's requirement) the grants lowered; each open
  stream is re-checked every ``recheck_interval`` seconds, one look-up per distinct key and
  round, at most ``max_concurrency`` at once;
- at once on a revocation event (a PostgreSQL ``NOTIFY``, a SQLite commit, a Redis message;
  see :mod:`agentguard.storage._revocation_feeds`): the streams the event names are re-checked
  now, across instances;
- after ``outage_grace`` seconds of failed re-checks (the store cannot be read): fail closed,
  503 ``store_unavailable``. Until then the stream goes on and is retried every second. A
  re-check that does not answer within the interval (at least 1 s, at most 30 s) has failed,
  and ends its round: a store that hangs rather than fails cannot hold up the cuts.

Each cut is audited here, once: a ``guard.decision`` deny event with the lease's ids and
``detail.stream = "cut"``.

The registry's worker starts on the first :meth:`LiveStreams.hold` in an event loop and stops
``linger`` seconds after the last stream of that loop ended, so apps that never run a lifespan
leak nothing; :meth:`LiveStreams.start` / :meth:`LiveStreams.aclose` (from
:func:`~agentguard.asgi.guard_lifespan`) or :meth:`LiveStreams.run` (in a task group) keep it
(and its feed's connection) up for the app's life instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from agentguard._config_streams import StreamSettings
from agentguard._stream_checks import (
    OUTAGE,
    RecentChanges,
    StreamChecker,
    Verdict,
    cut_event,
    expired,
    identity,
    new_lease,
)
from agentguard._stream_lease import StreamLease
from agentguard.audit._events import AuditEvent
from agentguard.errors import RequestRefused, ServiceUnavailable, StoreUnavailable
from agentguard.storage._outage import shield_store
from agentguard.storage._revocation_feeds import EVERYTHING, Change, RevocationFeed, feed_for

if TYPE_CHECKING:
    from agentguard._guard import Guard
    from agentguard._model import Principal
    from agentguard._passage import Passage

__all__ = ["LiveStreams"]

logger = logging.getLogger("agentguard.streams")

_RETRY = 1.0  # seconds between re-checks of a stream whose last one failed (outage)
# Seconds of events a new lease is matched against: the gap between a request's decision and
# its stream's lease is the upstream's time to its first byte, minutes for a reasoning model.
_RECENT = 600.0
_BACKOFF = (0.25, 10.0)  # first and longest wait before re-watching a lost feed
_LOOKUP_TIMEOUT_MAX = 30.0  # the longest a re-check may take before it counts as an outage
_AUTO: Any = object()


class _Worker:
    """The leases of one event loop and the task that re-checks them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.leases: set[StreamLease] = set()
        self.evented: set[StreamLease] = set()  # marked due by an event since their last check
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.kept = False
        self.feed_up = False
        self.next_at = float("inf")  # when the worker wakes by itself (monotonic seconds)


class LiveStreams:
    """The open streams of one guard, each holding a :class:`StreamLease`.

    Args:
        guard: whose store, clock and audit log the re-checks and cuts use.
        settings: ``[streams]``: interval, events, outage grace (see
            :class:`~agentguard.config.StreamSettings`).
        feed: the revocation feed; by default the one ``settings.events`` and the store call
            for (:func:`~agentguard.storage._revocation_feeds.feed_for`), ``None`` for none.
    """

    def __init__(
        self,
        guard: Guard,
        settings: StreamSettings | None = None,
        *,
        feed: RevocationFeed | None = _AUTO,
    ) -> None:
        self._guard = guard
        self.settings = settings if settings is not None else StreamSettings()
        self._checker = StreamChecker(shield_store(guard.store, "key store"), guard.clock)
        self._feed_choice = feed
        self._workers: dict[asyncio.AbstractEventLoop, _Worker] = {}
        self._recent = RecentChanges()
        self.cuts = 0
        """How many leases this registry has cut."""

    def __repr__(self) -> str:
        return f"LiveStreams(open={self.open_count}, interval={self.interval})"

    @property
    def interval(self) -> float:
        """Seconds between two re-checks of one open stream."""
        return self.settings.recheck_interval

    @property
    def open_count(self) -> int:
        """How many streams hold a lease now (every event loop)."""
        return sum(len(worker.leases) for worker in list(self._workers.values()))

    @property
    def feed(self) -> RevocationFeed | None:
        """Where revocation events come from (``None``: the interval alone)."""
        if self._feed_choice is _AUTO:
            self._feed_choice = feed_for(self._guard.store, self.settings)
        feed: RevocationFeed | None = self._feed_choice
        return feed

    def listening(self) -> bool:
        """Whether the running loop's worker receives revocation events now."""
        worker = self._workers.get(asyncio.get_running_loop())
        return worker is not None and worker.feed_up

    @contextlib.asynccontextmanager
    async def hold(
        self, who: Passage | Principal, *, key: str | None
    ) -> AsyncIterator[StreamLease]:
        """A lease for one open stream, released when the block ends.

        ``who`` is the :class:`~agentguard.Passage` of the request that opened the stream (its
        requirement is re-authorised on each re-check; its request id, method, path and service
        go into the audit event of a cut) or just its :class:`~agentguard.Principal`. ``key``
        is the credential the request presented: only its SHA-256 is kept, for the re-checks.
        For ``None`` or a token that is not an agentguard key (a JWT a token resolver took),
        the user, membership and account are re-checked and the lease ends at the principal's
        ``expires_at``, but revoking that token alone is not seen.
        """
        lease = new_lease(who, key)
        loop = asyncio.get_running_loop()
        worker = self._worker(loop)
        now = self._guard.clock.monotonic()
        lease.opened = now
        lease.due = now + self._first_check(lease, now)
        worker.leases.add(lease)
        if min(lease.due, now + self._until_expiry(lease)) < worker.next_at:
            worker.wake.set()  # due before the worker would wake by itself
        try:
            if lease.expires_at is not None and lease.expires_at <= self._guard.clock.now():
                await self._record([self._cut(lease, expired(lease), "expiry")])
            yield lease
        finally:
            worker.leases.discard(lease)
            worker.evented.discard(lease)
            if not worker.leases and not worker.kept:
                worker.wake.set()  # on demand: the linger starts now (a kept worker just waits)

    async def start(self) -> None:
        """Run the running loop's worker and feed from now until :meth:`aclose` (a lifespan's
        startup), rather than only while streams are open."""
        worker = self._worker(asyncio.get_running_loop())
        worker.kept = True

    async def aclose(self) -> None:
        """Stop the running loop's worker and feed (a lifespan's shutdown). A stream still
        open is cut (503): nothing would check it any more."""
        worker = self._workers.pop(asyncio.get_running_loop(), None)
        if worker is None:
            return
        task, worker.task = worker.task, None
        if task is not None:
            task.cancel()
            with anyio.move_on_after(5), contextlib.suppress(asyncio.CancelledError):
                await task
        shutdown = ServiceUnavailable("the server is shutting down; reconnect")
        await self._record([self._cut(lease, shutdown, "shutdown") for lease in worker.leases])

    async def run(self) -> None:
        """Keep the running loop's worker up until cancelled (``task_group.start_soon(run)``)."""
        await self.start()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    def wake(self) -> None:
        """Evaluate due re-checks and expiries now (after moving a fake clock)."""
        for worker in list(self._workers.values()):
            _call(worker, worker.wake.set)

    def changed(self, **ids: str | None) -> None:
        """Re-check now the streams these ids name (none: every stream), as an event would."""
        named = tuple((field, value) for field, value in ids.items() if value is not None)
        self._changed(Change(named))

    async def recheck(self) -> int:
        """Re-check every open stream of the running loop now; how many were cut."""
        worker = self._workers.get(asyncio.get_running_loop())
        if worker is None:
            return 0
        before = self.cuts
        for lease in worker.leases:
            lease.due = float("-inf")
        await self._round(worker)
        return self.cuts - before

    # The worker

    def _worker(self, loop: asyncio.AbstractEventLoop) -> _Worker:
        worker = self._workers.get(loop)
        if worker is None:
            for gone in [other for other in self._workers if other.is_closed()]:
                del self._workers[gone]  # loops that ended without aclose (tests, portals)
            worker = self._workers[loop] = _Worker(loop)
        if worker.task is None or worker.task.done():
            worker.task = loop.create_task(self._serve(worker), name="agentguard-live-streams")
        return worker

    async def _serve(self, worker: _Worker) -> None:
        clock = self._guard.clock
        try:
            feed = self.feed
        except Exception as error:  # a feed that cannot be made: the interval still holds
            logger.error("no revocation feed for open streams: %s", type(error).__name__)
            feed = None
        watching = None if feed is None else asyncio.create_task(self._watch(feed, worker))
        idle_since: float | None = None
        try:
            while True:
                worker.wake.clear()
                try:
                    await self._round(worker)
                except Exception as error:  # never let the worker die with streams open
                    logger.error("a stream re-check round failed: %s", type(error).__name__)
                now = clock.monotonic()
                if worker.leases or worker.kept:
                    idle_since = None
                    timeout = self._next(worker, now)
                    worker.next_at = now + timeout
                else:
                    idle_since = now if idle_since is None else idle_since
                    worker.next_at = float("inf")  # a new stream wakes it at once
                    timeout = self.settings.linger - (now - idle_since)
                    if timeout <= 0:
                        worker.task = None  # a hold from now on starts a new worker task
                        return
                with anyio.move_on_after(timeout):  # not wait_for: it can swallow a cancel
                    await worker.wake.wait()
        finally:
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            if worker.task is None:
                worker.feed_up = False

    def _next(self, worker: _Worker, now: float) -> float:
        """Seconds until the worker has something to do (a due check or an expiry)."""
        wait = max(self.interval, _RETRY)
        wall = self._guard.clock.now()
        for lease in worker.leases:
            if lease.is_cut:
                continue
            wait = min(wait, lease.due - now)
            if lease.expires_at is not None:
                wait = min(wait, (lease.expires_at - wall).total_seconds())
        return max(wait, 0.0)

    async def _watch(self, feed: RevocationFeed, worker: _Worker) -> None:
        delay = _BACKOFF[0]

        def ready() -> None:
            nonlocal delay
            delay = _BACKOFF[0]
            worker.feed_up = True
            self._mark(worker, EVERYTHING)  # events sent while not listening are lost

        while True:
            try:
                await feed.watch(self._changed, ready)
            except Exception as error:  # only its type: a driver's message may name a DSN
                logger.warning(
                    "revocation feed %r failed (%s); open streams are re-checked every %ss "
                    "until it is back",
                    feed,
                    type(error).__name__,
                    self.interval,
                )
            worker.feed_up = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF[1])

    def _changed(self, change: Change) -> None:
        """An event (from any thread): mark the streams it names due, on every loop."""
        self._recent.note(change, self._guard.clock.monotonic())
        for worker in list(self._workers.values()):
            _call(worker, functools.partial(self._mark, worker, change))

    def _mark(self, worker: _Worker, change: Change) -> None:
        for lease in worker.leases:
            if change.matches(lease):
                lease.due = float("-inf")
                worker.evented.add(lease)
        worker.wake.set()

    def _first_check(self, lease: StreamLease, now: float) -> float:
        """Seconds until a new lease's first re-check. An event of the last minutes may
        postdate the request's decision but predate the hold (the upstream took that long to
        answer): one naming this stream means now; one naming no one (a SQLite commit), or
        an id the registry had to forget, means within a second, so that the many short
        responses end before they cost a look-up."""
        named, vague = self._recent.since(lease, now - _RECENT)
        if named:
            return 0.0
        return min(self.interval, _RETRY) if vague else self.interval

    def _until_expiry(self, lease: StreamLease) -> float:
        if lease.expires_at is None:
            return float("inf")
        return (lease.expires_at - self._guard.clock.now()).total_seconds()

    # One round

    async def _round(self, worker: _Worker) -> None:
        clock = self._guard.clock
        wall, now = clock.now(), clock.monotonic()
        slack = min(_RETRY / 2, self.interval / 10)
        events: list[AuditEvent | None] = []
        groups: dict[object, list[StreamLease]] = {}
        for lease in list(worker.leases):
            if lease.is_cut:
                continue
            if lease.expires_at is not None and lease.expires_at <= wall:
                events.append(self._cut(lease, expired(lease), "expiry"))
            elif lease.due <= now + slack:  # those due soon too: fewer, larger rounds
                lease.due = now + self.interval  # an event during the check sets it back
                groups.setdefault(identity(lease), []).append(lease)
        groups_list = list(groups.values())
        verdicts = await self._check_all([leases[0] for leases in groups_list])
        now = clock.monotonic()
        for leases, verdict in zip(groups_list, verdicts, strict=True):
            for lease in leases:
                trigger = "event" if lease in worker.evented else "interval"
                worker.evented.discard(lease)
                events.append(self._settle(lease, verdict, trigger, now))
        await self._record(events)

    async def _check_all(self, leases: list[StreamLease]) -> list[Verdict]:
        """The verdict for each lease, at most ``max_concurrency`` look-ups at once.

        A look-up that does not answer within :meth:`_lookup_timeout` is an outage, like one
        that fails, and ends the round: every look-up not answered by then is an outage too
        (a store that hangs for one key hangs for the others), so a hung store can never hold
        the worker, and with it every expiry and event cut, for longer than that."""
        verdicts: list[Verdict] = [OUTAGE] * len(leases)
        if not leases:
            return verdicts
        limit = anyio.Semaphore(self.settings.max_concurrency)
        timeout = self._lookup_timeout()

        async with anyio.create_task_group() as group:

            async def check(index: int, lease: StreamLease) -> None:
                async with limit:
                    with anyio.move_on_after(timeout) as waited:
                        verdicts[index] = await self._checker.check(lease)
                if waited.cancelled_caught:
                    logger.warning("a stream re-check took over %ss: the store hangs", timeout)
                    group.cancel_scope.cancel()

            for index, lease in enumerate(leases):
                group.start_soon(check, index, lease)
        return verdicts

    def _lookup_timeout(self) -> float:
        """Seconds one re-check may take before it counts as an outage: the interval, within
        [1 s, 30 s]."""
        return min(max(self.interval, _RETRY), _LOOKUP_TIMEOUT_MAX)

    def _settle(
        self, lease: StreamLease, verdict: Verdict, trigger: str, now: float
    ) -> AuditEvent | None:
        if isinstance(verdict, RequestRefused):
            return self._cut(lease, verdict, trigger)
        if verdict is None:
            lease.failing_since = None
            return None
        if lease.failing_since is None:
            lease.failing_since = now
        if now - lease.failing_since >= self.settings.outage_grace:
            return self._cut(lease, StoreUnavailable().with_context(**lease.ids()), "outage")
        lease.due = min(lease.due, now + min(_RETRY, self.interval))
        return None

    # Cuts

    def _cut(self, lease: StreamLease, error: RequestRefused, trigger: str) -> AuditEvent | None:
        """Cut ``lease``; its audit event, or ``None`` when it was cut already."""
        if not lease.cut(error):
            return None
        self.cuts += 1
        return cut_event(lease, error, trigger, self._guard.clock)

    async def _record(self, events: list[AuditEvent | None]) -> None:
        for event in events:
            if event is None:
                continue
            try:
                await self._guard.record(event)
            except Exception as error:  # the stream is cut either way
                logger.error("a stream cut could not be audited: %s", type(error).__name__)


def _call(worker: _Worker, callback: Callable[[], object]) -> None:
    """Run ``callback`` on the worker's loop: now if that is the running one, else soon."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is worker.loop:
        callback()
    elif not worker.loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            worker.loop.call_soon_threadsafe(callback)
