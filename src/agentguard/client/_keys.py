"""The keys in use, and their renewal in a single flight.

The state check and the decision to refresh happen under a ``threading.Lock`` that is released
before any I/O, so it never spans a ``yield`` or an ``await``. The caller that finds renewal due
and no refresh in progress leads; the others keep the current key while it is still valid, or
wait for the leader's :class:`~agentguard.client._renewal.Flight` and look again.

With a credentials file, the leader holds the file's inter-process ``flock`` from re-reading
the file until the new keys are written, so two processes of one agent never spend the same
refresh key (the server would take that for theft and revoke the family). Only the leader
takes it; requests never wait on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar

from agentguard._clock import Clock
from agentguard.client._credentials_file import AgentCredentials, CredentialsFile, FileLock
from agentguard.client._errors import CredentialsFileError, RefreshFailed
from agentguard.client._flow import Io, Perform, in_thread
from agentguard.client._renewal import Flight
from agentguard.client._token import TokenEndpoint

__all__ = ["Keys"]

logger = logging.getLogger("agentguard.client")

Y = TypeVar("Y")

_RETRY_AFTER_FAILURE = timedelta(seconds=30)


@dataclass(frozen=True)
class _Decision:
    kind: Literal["use", "wait", "lead"]
    credentials: AgentCredentials
    flight: Flight | None = None
    fallback: AgentCredentials | None = None  # what a lead may keep using if renewal fails


class Keys:
    """The keys in use; :meth:`current` renews them when due, one refresh at a time."""

    def __init__(
        self,
        credentials: AgentCredentials,
        token: TokenEndpoint,
        *,
        file: CredentialsFile | None,
        clock: Clock,
        expiry_margin: timedelta,
    ) -> None:
        self.token = token
        self.file = file
        self.clock = clock
        self.expiry_margin = expiry_margin
        self.refreshes = 0
        self._lock = threading.Lock()
        self._credentials = credentials
        self._flight: Flight | None = None
        self._retry_after: datetime | None = None

    @property
    def credentials(self) -> AgentCredentials:
        with self._lock:
            return self._credentials

    def current(
        self, stale: AgentCredentials | None, fraction: float, perform: Perform[Y]
    ) -> Generator[Y, Any, AgentCredentials]:
        """Credentials good to use now, renewed first when due (``stale``: keys just refused)."""
        while True:
            decision = self._decide(stale, fraction)
            flight = decision.flight
            if decision.kind == "use" or flight is None:
                return decision.credentials
            if decision.kind == "wait":
                yield from perform(Io(flight.wait_sync, flight.wait_async))
                continue
            try:
                return (yield from self._refresh(decision.credentials, stale, fraction, perform))
            except RefreshFailed as error:
                if error.permanent or decision.fallback is None:
                    raise
                with self._lock:
                    self._retry_after = self.clock.now() + _RETRY_AFTER_FAILURE
                logger.warning("key renewal failed, still using the current key: %s", error)
                return decision.fallback
            finally:
                with self._lock:
                    if self._flight is flight:
                        self._flight = None
                flight.finish()

    def _decide(self, stale: AgentCredentials | None, fraction: float) -> _Decision:
        with self._lock:
            current = self._credentials
            now = self.clock.now()
            if stale is not None:
                if current.access_key != stale.access_key:
                    return _Decision("use", current)  # renewed since it was refused
                valid = False
            else:
                if now < current.renew_point(fraction):
                    return _Decision("use", current)
                valid = now < current.expires_at - self.expiry_margin
                if valid and self._retry_after is not None and now < self._retry_after:
                    return _Decision("use", current)
            if self._flight is not None:
                if valid:
                    return _Decision("use", current)
                return _Decision("wait", current, self._flight)
            self._flight = Flight()
            return _Decision("lead", current, self._flight, current if valid else None)

    def _refresh(
        self,
        base: AgentCredentials,
        stale: AgentCredentials | None,
        fraction: float,
        perform: Perform[Y],
    ) -> Generator[Y, Any, AgentCredentials]:
        """The leader's work: adopt another process's renewal, or spend the refresh key."""
        file = self.file
        if file is None:
            return self._install((yield from self.token.refresh(base, self.clock, perform)))
        lock: FileLock = yield from perform(in_thread(lambda: file.lock().acquire()))
        try:
            on_disk: AgentCredentials = yield from perform(in_thread(file.load))
            if on_disk.refresh_key != base.refresh_key:
                if stale is not None:
                    fresh = on_disk.access_key != stale.access_key
                else:
                    fresh = self.clock.now() < on_disk.renew_point(fraction)
                if fresh:
                    return self._install(on_disk, refreshed=False)
                base = on_disk
            renewed = self._install((yield from self.token.refresh(base, self.clock, perform)))
            try:
                yield from perform(in_thread(partial(file.save, renewed)))
            except CredentialsFileError as error:
                logger.error("renewed keys are in memory only: %s", error)
            return renewed
        finally:
            lock.release()

    def _install(
        self, credentials: AgentCredentials, *, refreshed: bool = True
    ) -> AgentCredentials:
        with self._lock:
            self._credentials = credentials
            self._retry_after = None
            if refreshed:
                self.refreshes += 1
        return credentials
