"""Refusals that decide about no one, counted: one audit event per source, reason and interval.

A request with no key, a malformed key or a key the store does not know names nobody: there is
no user, key or account the refusal is about, and anyone on the network can send millions of
them. Writing one chained, durable event each lets anonymous garbage fill the audit log (and pay
a durable append per request). :class:`RefusalSummaries` counts them instead, per
``(source, reason, status, service)``, and hands the :class:`~agentguard.audit.AuditWriter` one
``guard.refusal_summary`` event per bucket (``decision=deny``, the reason and status, and in
``detail`` the source, count, first and last time and the interval) when the interval ends, when
``max_count`` refusals are held, or when the writer is flushed at shutdown.

Every refusal about a resolvable key (revoked, expired, disabled user, insufficient scope, a
DPoP failure on a known key) still gets its own event: the guard only routes here refusals whose
reason is in :attr:`RefusalSummaryPolicy.reasons`, that carry no key, user or account id, and
whose request holds no key the store knows anywhere (path, query, any header). The token
endpoint counts its refusals (an unknown or malformed refresh key, a bad DPoP proof with one)
the same way.

What this costs: counted refusals are held in memory until their summary is appended. A crash
loses at most the refusals of the open interval, and never more than ``max_count`` of them. Memory
is bounded: at most ``max_sources`` distinct sources are held per interval; refusals from further
sources are counted under the source ``"other"``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from agentguard.audit._events import Action, AuditEvent, Decision, rfc3339

if TYPE_CHECKING:
    from agentguard._clock import Clock

__all__ = [
    "ANONYMOUS_REASONS",
    "OTHER_SOURCE",
    "UNKNOWN_SOURCE",
    "RefusalSummaries",
    "RefusalSummaryPolicy",
]

ANONYMOUS_REASONS = frozenset(
    {
        "missing_credentials",
        "malformed_key",
        "unknown_key",
        "unsupported_scheme",
        "malformed_request",
        "key_outside_credential_position",
        "no_route_rule",
    }
)
"""Refusal reasons that may name no one: decided before any key was resolved, or about a key
the store does not know. A refusal with one of them is counted only when it carries no identity
and the request holds no key the store knows (the guard looks key-shaped strings up)."""

OTHER_SOURCE = "other"
"""The source refusals are counted under once ``max_sources`` sources are held."""

UNKNOWN_SOURCE = "unknown"
"""The source of a request whose adapter did not say where it came from."""

_MAX_SOURCE_CHARS = 64


@dataclass(frozen=True, slots=True)
class RefusalSummaryPolicy:
    """How anonymous refusals are counted. The defaults are safe for a public gateway.

    Attributes:
        interval: seconds a summary covers at most; its event is appended at the first
            audit write after the interval ends (and at shutdown, and by
            :meth:`~agentguard.audit.AuditWriter.run_summaries` if the host runs it).
        max_sources: distinct sources held per interval; more are counted as ``"other"``.
        max_count: refusals held before the summaries are written early, so a crash loses at
            most this many even under a flood.
        reasons: the refusal reasons counted here (see :data:`ANONYMOUS_REASONS`).
    """

    interval: float = 60.0
    max_sources: int = 1024
    max_count: int = 100_000
    reasons: frozenset[str] = field(default=ANONYMOUS_REASONS)

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("interval is a positive number of seconds")
        if self.max_sources < 1:
            raise ValueError("max_sources is at least 1")
        if self.max_count < 1:
            raise ValueError("max_count is at least 1")
        unknown = set(self.reasons) - ANONYMOUS_REASONS
        if unknown:
            raise ValueError(
                f"only refusals that name no one can be counted, not {sorted(unknown)}: "
                "a refusal about a known key always gets its own event"
            )


class _Key(NamedTuple):
    source: str
    reason: str
    status: int
    service: str | None


@dataclass(slots=True)
class _Bucket:
    count: int
    first: datetime
    last: datetime


def _source(source: str | None) -> str:
    if not source:
        return UNKNOWN_SOURCE
    cleaned = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in source)
    return cleaned[:_MAX_SOURCE_CHARS]


class RefusalSummaries:
    """Counts anonymous refusals and turns them into summary events. Thread-safe.

    Args:
        policy: interval, bounds and the reasons counted.
        clock: ``monotonic()`` times the interval; ``now()`` stamps first and last.
    """

    def __init__(self, policy: RefusalSummaryPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[_Key, _Bucket] = {}
        self._sources: set[str] = set()
        self._held = 0
        self._opened: float | None = None
        self._opened_at: datetime | None = None

    @property
    def held(self) -> int:
        """Refusals counted and not yet handed out as events."""
        return self._held

    def counts(self, reason: str) -> bool:
        """Whether refusals for ``reason`` are counted here (when they name no one)."""
        return reason in self.policy.reasons

    def add(self, *, source: str | None, reason: str, status: int, service: str | None) -> None:
        """Count one refusal from ``source`` (a client address; ``None``: unknown)."""
        now = self.clock.now()
        name = _source(source)
        with self._lock:
            if self._opened is None:
                self._opened, self._opened_at = self.clock.monotonic(), now
            if name not in self._sources:
                if len(self._sources) >= self.policy.max_sources:
                    name = OTHER_SOURCE
                self._sources.add(name)
            key = _Key(name, reason, status, service)
            bucket = self._buckets.get(key)
            if bucket is None:
                self._buckets[key] = _Bucket(1, now, now)
            else:
                bucket.count += 1
                bucket.last = now
            self._held += 1

    def due(self) -> bool:
        """Whether the open interval ended or ``max_count`` refusals are held."""
        opened = self._opened
        if opened is None:
            return False
        return (
            self._held >= self.policy.max_count
            or self.clock.monotonic() - opened >= self.policy.interval
        )

    def take(self, *, force: bool = False) -> list[AuditEvent]:
        """The summary events of the open interval, which closes; ``[]`` if not due.

        ``force`` takes them even before the interval ends (shutdown). Events are ordered by
        their first refusal.
        """
        if not force and not self.due():
            return []
        with self._lock:
            buckets, self._buckets = self._buckets, {}
            opened_at = self._opened_at
            self._sources = set()
            self._held = 0
            self._opened = self._opened_at = None
        if not buckets or opened_at is None:
            return []
        seconds = int(self.policy.interval)
        ordered = sorted(buckets.items(), key=lambda item: item[1].first)
        return [
            AuditEvent(
                action=Action.REFUSAL_SUMMARY,
                ts=bucket.last,
                decision=Decision.DENY,
                reason=key.reason,
                status=key.status,
                service=key.service,
                detail={
                    "source": key.source,
                    "count": bucket.count,
                    "first": rfc3339(bucket.first),
                    "last": rfc3339(bucket.last),
                    "interval_start": rfc3339(opened_at),
                    "interval_s": seconds,
                },
            )
            for key, bucket in ordered
        ]

    def __repr__(self) -> str:
        return f"RefusalSummaries(held={self._held}, interval={self.policy.interval})"
