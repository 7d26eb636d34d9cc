"""Budgets and rate limits, checked live on every authorised call (see docs/how-to/approvals.md).

::

    guard = Guard(
        store,
        rules=[RouteRule("/crm", "crm", cost={"POST": 5})],
        budgets=[Budget("crm-daily", limit=1000, window=timedelta(days=1), service="crm")],
        rate_limits=[RateLimit("per-key", rate=10, burst=20)],
    )

A spent budget is refused with 429 ``budget_exhausted`` and ``Retry-After`` (the window's
reset); an exceeded rate with 429 ``rate_limited``. The counters live in a
:class:`~agentguard.storage.LimitStore` shared by every instance (SQLite, PostgreSQL, Redis, or
memory for one process); a store that fails refuses the call (503).
"""

from agentguard.limits._errors import BudgetExhausted, RateLimited
from agentguard.limits._policy import Budget, LimitScope, RateLimit

__all__ = ["Budget", "BudgetExhausted", "LimitScope", "RateLimit", "RateLimited"]
