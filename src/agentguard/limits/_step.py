"""The limit steps of the pipeline: rate limits, then budgets, each one atomic store call.

Rate limits run right after authorization (a flood of calls held for approval is limited too);
budgets run after the approval step, just before the call is handed on. Keys in the store are
``rate:<name>:<scope>:<subject>`` and ``budget:<name>:<scope>:<subject>:<window index>``: ids
only. A store that fails refuses the call (503), never lets it through: the guard hands this
step its store behind :func:`~agentguard.storage._outage.shield_store`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from agentguard.limits._errors import BudgetExhausted, RateLimited

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from agentguard._clock import Clock
    from agentguard._model import Principal
    from agentguard._permissions import Requirement
    from agentguard.limits._policy import Budget, RateLimit
    from agentguard.storage._gate_protocols import LimitStore

__all__ = ["LimitStep", "window_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def window_of(now: datetime, window: timedelta) -> tuple[int, datetime]:
    """The index of the epoch-aligned window holding ``now``, and the instant it ends."""
    index = (now - _EPOCH) // window
    return index, _EPOCH + (index + 1) * window


class LimitStep:
    """Takes rate-limit tokens and charges budgets for one principal's call."""

    __slots__ = ("_budgets", "_clock", "_rates", "_store")

    def __init__(
        self,
        budgets: Sequence[Budget],
        rate_limits: Sequence[RateLimit],
        store: LimitStore,
        clock: Clock,
    ) -> None:
        self._budgets = tuple(budgets)
        self._rates = tuple(rate_limits)
        self._store = store
        self._clock = clock
        names = [b.name for b in self._budgets] + [r.name for r in self._rates]
        if len(set(names)) != len(names):
            from agentguard.errors import ConfigurationError

            raise ConfigurationError("two budgets or rate limits share one name")

    @property
    def store(self) -> LimitStore:
        """Where the counters and buckets live."""
        return self._store

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """The budgets, in the order they are charged."""
        return self._budgets

    @property
    def rate_limits(self) -> tuple[RateLimit, ...]:
        """The rate limits, in the order they are taken."""
        return self._rates

    async def take(self, principal: Principal, requirement: Requirement | None) -> None:
        """Take one call from every rate limit that applies; :class:`RateLimited` if one is
        empty (buckets taken before it stay taken: the call was made, if refused)."""
        service = None if requirement is None else requirement.service
        for limit in self._rates:
            if not limit.applies(service):
                continue
            bucket = f"rate:{limit.name}:{limit.per.value}:{limit.per.subject(principal)}"
            decision = await self._store.take(
                bucket, interval=limit.interval, burst=limit.burst or 1, now=self._clock.now()
            )
            if not decision.allowed:
                raise RateLimited(limit=limit.name, retry_after=decision.retry_after)

    def _windows(
        self, principal: Principal, requirement: Requirement
    ) -> Iterator[tuple[Budget, str, datetime, datetime]]:
        """Each budget that applies to the call, with its counter for the window open now,
        the instant read and the window's end."""
        for budget in self._budgets:
            if not budget.applies(requirement.service):
                continue
            now = self._clock.now()
            index, ends = window_of(now, budget.window)
            subject = budget.per.subject(principal)
            yield budget, f"budget:{budget.name}:{budget.per.value}:{subject}:{index}", now, ends

    async def room(self, principal: Principal, requirement: Requirement) -> None:
        """Refuse (:class:`BudgetExhausted`) when a budget that applies has no room for this
        call's cost now, charging nothing: a read of each counter (a charge of 0). Run before
        an approval is used, so a spent budget does not use it up; :meth:`charge` still
        decides atomically afterwards."""
        for budget, counter, now, ends in self._windows(principal, requirement):
            seen = await self._store.charge(counter, cost=0, limit=budget.limit, expires_at=ends)
            if seen.used + requirement.cost > budget.limit:
                raise BudgetExhausted(budget=budget.name, reset_at=ends, now=now)

    async def charge(self, principal: Principal, requirement: Requirement | None) -> None:
        """Charge the call's cost to every budget that applies; :class:`BudgetExhausted` if one
        lacks room. Budgets charged before it keep the charge (documented, never refunded)."""
        if requirement is None:
            return
        for budget, counter, now, ends in self._windows(principal, requirement):
            charged = await self._store.charge(
                counter, cost=requirement.cost, limit=budget.limit, expires_at=ends
            )
            if not charged.allowed:
                raise BudgetExhausted(budget=budget.name, reset_at=ends, now=now)
