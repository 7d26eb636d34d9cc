"""The back-off of a (service, user)'s refresh after the vendor could not renew it.

Inside the refresh window every call of the user's agent would otherwise ask the vendor again,
also after the vendor said "come back later" (429, 503): one agent's loop, or every user's
agents together, would hammer the token endpoint with the gateway's one client registration,
which the vendor then rate-limits or blocks for every user. After a transient failure
(:class:`~agentguard.connect.VendorUnavailable`, a refusal other than ``invalid_grant``, or no
answer in time) the (service, user) is not renewed again until its back-off has passed:
1 s after the first failure, doubling up to 60 s, and never sooner than the vendor's
``Retry-After`` (honoured up to 5 min). Meanwhile a token that is still valid is used, and an
expired one is answered 502 ``vendor_unavailable`` with ``Retry-After``. A renewal that works,
a reconnect, or the connection breaking ends the back-off.

The back-off is kept in process, per :class:`~agentguard.connect.ConnectedAccounts`: each
gateway instance keeps its own. That is enough: the store lease already lets only one instance
at a time renew a (service, user), so N instances ask the vendor at most N times per back-off.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from agentguard._clock import Clock
from agentguard.errors import BadGateway, Reason

__all__ = ["BACKOFF_FIRST", "BACKOFF_LAST", "RETRY_AFTER_LAST", "RefreshBackoff", "VendorBackoff"]

BACKOFF_FIRST = 1.0
"""Seconds without a renewal after the first failure in a row."""
BACKOFF_LAST = 60.0
"""The longest back-off the failures in a row grow to (the vendor's ``Retry-After`` aside)."""
RETRY_AFTER_LAST = 300.0
"""The longest ``Retry-After`` of a vendor that is honoured: a longer one (or a hostile one)
must not stop renewals for hours."""
_CAPACITY = 10_000

Key = tuple[str, str]


class VendorBackoff(BadGateway):
    """502 ``vendor_unavailable`` with ``Retry-After``: the token has expired and the vendor
    is not asked to renew it again before the back-off has passed."""

    def __init__(self, service: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(service, reason=Reason.VENDOR_UNAVAILABLE)

    def response_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class RefreshBackoff:
    """When each (service, user) may be renewed again, after failures in a row.

    Args:
        clock: every time here comes from it.
        first: seconds after the first failure.
        last: the longest back-off the failures grow to.
        capacity: how many (service, user) are remembered at most (the oldest are dropped).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        first: float = BACKOFF_FIRST,
        last: float = BACKOFF_LAST,
        capacity: int = _CAPACITY,
    ) -> None:
        self.clock = clock
        self.first = first
        self.last = last
        self.capacity = capacity
        self._entries: dict[Key, tuple[int, datetime]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def waiting(self, key: Key) -> float | None:
        """Seconds until ``key`` may be renewed again; ``None`` when it may be now."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        left = (entry[1] - self.clock.now()).total_seconds()
        return left if left > 0 else None

    def failed(self, key: Key, retry_after: float | None = None) -> float:
        """Record a failed renewal of ``key``; the seconds it now waits.

        The back-off doubles with each failure in a row (a failure long after the last
        back-off ended starts again at ``first``) and is at least ``retry_after`` (capped at
        :data:`RETRY_AFTER_LAST`).
        """
        now = self.clock.now()
        failures, until = self._entries.pop(key, (0, now))
        if now - until > timedelta(seconds=self.last):
            failures = 0
        failures += 1
        seconds = min(self.first * 2.0 ** min(failures - 1, 32), self.last)
        if retry_after is not None and math.isfinite(retry_after):
            seconds = max(seconds, min(retry_after, RETRY_AFTER_LAST))
        self._entries[key] = (failures, now + timedelta(seconds=seconds))
        self._trim()
        return seconds

    def forget(self, key: Key) -> None:
        """End ``key``'s back-off (a renewal worked, the user reconnected, it broke)."""
        self._entries.pop(key, None)

    def _trim(self) -> None:
        if len(self._entries) <= self.capacity:
            return
        now = self.clock.now()
        for key, (_, until) in list(self._entries.items()):
            if now >= until:
                del self._entries[key]
        while len(self._entries) > self.capacity:  # oldest first: entries move to the end
            del self._entries[next(iter(self._entries))]
