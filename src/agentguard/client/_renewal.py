"""A refresh in flight, and a background renewer for idle agents.

Single flight (see :mod:`agentguard.client._keys`): the caller that finds renewal due and no
refresh in progress leads; the others keep the current key while it is valid, or wait for the
leader's :class:`Flight` (a thread blocks, a task awaits) and then look again. The lock that
guards that decision never spans a ``yield`` or an ``await``.

:class:`Renewer` renews ahead of expiry while the agent is idle, as an asyncio/trio task
(``async with Renewer(auth):``) or as a thread (``with Renewer(auth):``), through the same single
flight, so it never refreshes concurrently with a request that renews in its auth flow.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import httpx
from anyio.abc import TaskGroup

from agentguard.client._errors import AgentAuthError, RefreshFailed

if TYPE_CHECKING:
    from agentguard.client._auth import AgentAuth

__all__ = ["Flight", "Renewer"]

logger = logging.getLogger("agentguard.client")


class Flight:
    """One refresh in progress; waiters block (threads) or await (tasks) until it finishes."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def finish(self) -> None:
        """Mark the flight over (successful or not) and wake every waiter."""
        with self._lock:
            self._done.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def wait_sync(self) -> None:
        self._done.wait()

    async def wait_async(self) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # another async library (trio): poll the thread-safe event
            while not self._done.is_set():  # noqa: ASYNC110 - a threading.Event, set from any thread
                await anyio.sleep(0.005)
            return
        future: asyncio.Future[None] = loop.create_future()
        running = loop

        def wake() -> None:
            if not running.is_closed():
                running.call_soon_threadsafe(_resolve, future)

        with self._lock:
            if self._done.is_set():
                return
            self._wakers.append(wake)
        try:
            await future
        finally:
            with self._lock:
                if wake in self._wakers:
                    self._wakers.remove(wake)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Renewer:
    """Renews an :class:`~agentguard.client.AgentAuth`'s keys ahead of expiry while idle.

    Each cycle renews once the access key has used between ``renew_at - jitter`` and
    ``renew_at`` of its life (a random point, so a fleet of agents does not refresh in step);
    ``renew_at`` is the auth's own. A refusal that cannot be retried (``invalid_grant``: the user
    was disabled, the keys revoked) stops the renewer and is kept in :attr:`error`; transient
    failures are retried after ``poll_interval``.

    Use it as a task: ``async with Renewer(auth): ...``, or as a thread:
    ``with Renewer(auth): ...`` (or :meth:`start` / :meth:`stop`).

    Args:
        auth: the runtime whose keys to renew.
        jitter: fraction of the key's lifetime to renew early by, at most (default 0.1).
        poll_interval: longest sleep, in seconds, between two checks of the clock (default 60);
            it also bounds how soon a changed clock or a failure is noticed.
        rng: randomness for the jitter (tests pass a seeded ``random.Random``).
    """

    def __init__(
        self,
        auth: AgentAuth,
        *,
        jitter: float = 0.1,
        poll_interval: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= jitter < auth.renew_at:
            raise ValueError("jitter must be between 0 and the auth's renew_at")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.auth = auth
        self.jitter = jitter
        self.poll_interval = poll_interval
        self._rng = rng or random.SystemRandom()
        self.renewals = 0
        self.error: RefreshFailed | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task_group: TaskGroup | None = None

    def __repr__(self) -> str:
        return f"Renewer(renewals={self.renewals}, error={self.error!r})"

    def _fraction(self) -> float:
        return self.auth.renew_at - self._rng.uniform(0, self.jitter)

    def _delay(self, fraction: float, renewed: bool) -> float:
        """Seconds to sleep before the next check."""
        credentials = self.auth.credentials
        due = credentials.renew_point(fraction)
        seconds = (due - self.auth.clock.now()).total_seconds()
        if seconds <= 0 and not renewed:  # due, but another caller is renewing or backing off
            return self.poll_interval
        return min(self.poll_interval, max(seconds, 0.0))

    def _outcome(self, error: Exception) -> bool:
        """Record a failed cycle; return whether to keep going."""
        if isinstance(error, RefreshFailed) and error.permanent:
            self.error = error
            logger.error("background renewal stopped: %s", error)
            return False
        logger.warning("background renewal failed, will retry: %s", error)
        return True

    # thread variant

    def start(self) -> Renewer:
        """Start renewing in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("this Renewer is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_thread, name="agentguard-renewer")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the thread and wait for it (a refresh in progress completes first)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> Renewer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run_thread(self) -> None:
        fraction = self._fraction()
        while not self._stop.is_set():
            renewed = False
            try:
                renewed = self.auth.renew(fraction=fraction)
            except (AgentAuthError, httpx.HTTPError) as error:
                if not self._outcome(error):
                    return
                self._stop.wait(self.poll_interval)
                continue
            if renewed:
                self.renewals += 1
                fraction = self._fraction()
            self._stop.wait(self._delay(fraction, renewed))

    # task variant

    async def __aenter__(self) -> Renewer:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._task_group = group
        group.start_soon(self._run_task, name="agentguard-renewer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        group, self._task_group = self._task_group, None
        if group is None:
            return None
        group.cancel_scope.cancel()
        return await group.__aexit__(exc_type, exc, traceback)

    async def _run_task(self) -> None:
        fraction = self._fraction()
        while True:
            renewed = False
            try:
                renewed = await self.auth.arenew(fraction=fraction)
            except (AgentAuthError, httpx.HTTPError) as error:
                if not self._outcome(error):
                    return
                await anyio.sleep(self.poll_interval)
                continue
            if renewed:
                self.renewals += 1
                fraction = self._fraction()
            await anyio.sleep(self._delay(fraction, renewed))
