"""Budgets and rate limits: what a caller may spend, and how fast it may call.

A :class:`Budget` counts what calls cost (a route rule's ``cost``, 1 by default) per subject
(key family, user, workspace or account) over fixed windows aligned to the Unix epoch (a daily
budget resets at 00:00 UTC); a :class:`RateLimit` is a token bucket (GCRA) per subject. Either
applies to one service or, with ``service=None``, to every call the guard authorises.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import timedelta

from agentguard._model import Principal
from agentguard.errors import UsageError

__all__ = ["MAX_UNITS", "Budget", "LimitScope", "RateLimit"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_SERVICE = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
_MAX_INTERVAL = 10 * 366 * 86400.0  # seconds: far below what int64 microseconds hold
MAX_UNITS = 2**53
"""Budget limits and costs stay below this: exact in every store (int64, Lua's doubles)."""


class LimitScope(str, enum.Enum):
    """Whose calls one counter or bucket holds."""

    KEY_FAMILY = "key_family"
    USER = "user"
    WORKSPACE = "workspace"
    ACCOUNT = "account"

    def subject(self, principal: Principal) -> str:
        """The id of ``principal``'s counter under this scope."""
        if self is LimitScope.KEY_FAMILY:
            return principal.family_id
        if self is LimitScope.USER:
            return principal.user_id
        if self is LimitScope.WORKSPACE:
            return principal.workspace_id
        return principal.account_id


def _check_common(kind: str, name: str, service: str | None) -> None:
    if not _NAME.match(name):
        raise UsageError(f"{kind} name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if service is not None and not _SERVICE.match(service):
        raise UsageError(f"{kind} {name}: invalid service name")


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` units of cost per ``per`` subject per ``window``.

    Args:
        name: names the budget in refusals, counters and audit events.
        limit: the units a window allows (a call costs its rule's ``cost``, 1 by default).
        window: the window's length; windows are aligned to the Unix epoch.
        per: whose calls share one counter.
        service: the service whose calls count, or ``None`` for every call.

    The check-and-charge is one atomic step in the store, after authorization and approval and
    before the call runs. A charge is not refunded when the upstream call then fails: the vendor
    may have acted anyway, and a refund would let failing calls be retried for free.
    """

    name: str
    limit: int
    window: timedelta
    per: LimitScope = LimitScope.USER
    service: str | None = None

    def __post_init__(self) -> None:
        _check_common("budget", self.name, self.service)
        if not 0 <= self.limit < MAX_UNITS:
            raise UsageError(f"budget {self.name}: limit is a whole number >= 0 (and < 2**53)")
        if self.window < timedelta(seconds=1) or self.window % timedelta(seconds=1):
            raise UsageError(f"budget {self.name}: window is a whole number of seconds >= 1")
        if self.window > timedelta(seconds=_MAX_INTERVAL):
            raise UsageError(f"budget {self.name}: a window is at most ten years")
        object.__setattr__(self, "per", LimitScope(self.per))

    def applies(self, service: str | None) -> bool:
        """Whether a call needing ``service`` counts against this budget."""
        return self.service is None or self.service == service


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` calls per ``period`` on average, ``burst`` at once, per subject.

    Args:
        name: names the limit in refusals and buckets.
        rate: calls allowed per ``period`` on average.
        period: the period ``rate`` is counted over (one second by default).
        burst: calls allowed at once on a rested bucket (default: ``rate``, at least 1).
        per: whose calls share one bucket.
        service: the service whose calls count, or ``None`` for every call.
    """

    name: str
    rate: float
    period: timedelta = timedelta(seconds=1)
    burst: int | None = None
    per: LimitScope = LimitScope.KEY_FAMILY
    service: str | None = None

    def __post_init__(self) -> None:
        _check_common("rate limit", self.name, self.service)
        if not (math.isfinite(self.rate) and self.rate > 0) or self.period <= timedelta(0):
            raise UsageError(f"rate limit {self.name}: rate and period are positive and finite")
        burst = self.burst if self.burst is not None else max(1, int(self.rate))
        if burst < 1:
            raise UsageError(f"rate limit {self.name}: burst is at least 1")
        object.__setattr__(self, "burst", burst)
        object.__setattr__(self, "per", LimitScope(self.per))
        if self.interval < 1e-6:
            raise UsageError(f"rate limit {self.name}: more than a million calls a second")
        if self.interval > _MAX_INTERVAL or self.interval * burst > _MAX_INTERVAL:
            raise UsageError(
                f"rate limit {self.name}: one call per period/rate, and a burst of such calls, "
                "must fit in ten years (every store keeps the bucket in whole microseconds)"
            )

    @property
    def interval(self) -> float:
        """Seconds between calls at the average rate (the GCRA emission interval)."""
        return self.period.total_seconds() / self.rate

    def applies(self, service: str | None) -> bool:
        """Whether a call needing ``service`` counts against this limit."""
        return self.service is None or self.service == service
