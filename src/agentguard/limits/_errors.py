"""The refusals of the limit steps: a budget spent, a rate exceeded (both 429)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import ClassVar

from agentguard.errors import Reason, TooManyRequests

__all__ = ["BudgetExhausted", "RateLimited"]


class BudgetExhausted(TooManyRequests):
    """429 ``budget_exhausted``: the budget's window is spent; ``Retry-After`` is its reset.

    Attributes:
        budget: the budget's name.
        reset_at: when the window ends and the budget is whole again.
        retry_after_s: whole seconds until then (at least 1).
    """

    error: ClassVar[str | None] = "budget_exhausted"
    default_reason = Reason.BUDGET_EXHAUSTED

    def __init__(
        self,
        description: str | None = None,
        *,
        budget: str,
        reset_at: datetime,
        now: datetime,
        reason: Reason | None = None,
    ) -> None:
        self.budget = budget
        self.reset_at = reset_at
        self.retry_after_s = max(1, math.ceil((reset_at - now).total_seconds()))
        super().__init__(description, reason=reason)

    def response_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after_s))]

    def body(self) -> dict[str, str]:
        body = super().body()
        body["budget"] = self.budget
        body["reset_at"] = self.reset_at.isoformat().replace("+00:00", "Z")
        return body


class RateLimited(TooManyRequests):
    """429 ``rate_limited``: too many calls in a short time; ``Retry-After`` says when to retry.

    Attributes:
        limit: the rate limit's name.
        retry_after_s: whole seconds to wait (at least 1).
    """

    error: ClassVar[str | None] = "rate_limited"
    default_reason = Reason.RATE_LIMITED

    def __init__(
        self,
        description: str | None = None,
        *,
        limit: str,
        retry_after: float,
        reason: Reason | None = None,
    ) -> None:
        self.limit = limit
        self.retry_after_s = max(1, math.ceil(retry_after))
        super().__init__(description, reason=reason)

    def response_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after_s))]

    def body(self) -> dict[str, str]:
        body = super().body()
        body["limit"] = self.limit
        return body
