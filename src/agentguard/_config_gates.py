"""The settings of the gates: ``[approvals]``, ``[[budgets]]``, ``[[rate_limits]]``, ``[limits]``.

Exported from :mod:`agentguard.config`; kept apart because that module is long. Route rules say
which calls wait for an approval and what a call costs (``approval`` and ``cost`` on a
``[[services.routes]]`` entry)::

    [approvals]
    ttl = 3600                      # seconds to decide, then to use, an approval
    webhook_url = "https://hooks.example.com/agentguard"
    # its signing secret: AGENTGUARD_APPROVAL_WEBHOOK_SECRET

    [[budgets]]
    name = "crm-daily"
    service = "crm"
    per = "user"                    # key_family | user | workspace | account
    limit = 1000
    window = 86400                  # seconds; windows aligned to the Unix epoch

    [[rate_limits]]
    name = "per-key"
    rate = 10                       # calls per period (seconds, 1 by default)
    burst = 20
    per = "key_family"

    [limits]
    store = "redis://127.0.0.1:6379/0"   # default: the main store
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentguard.limits._policy import Budget, LimitScope, RateLimit

__all__ = ["ApprovalSettings", "BudgetSettings", "LimitSettings", "RateLimitSettings"]


_MAX_SECONDS = 10 * 366 * 86400  # ten years: windows and periods beyond are typos


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovalSettings(Section):
    """``[approvals]``: how long approvals live, the largest body held, the webhook."""

    ttl: int = Field(default=3600, gt=0, le=_MAX_SECONDS)
    max_body: int = Field(default=64 * 1024, ge=0)
    max_pending: int = Field(default=20, ge=1)
    webhook_url: str | None = None
    webhook_retries: int = Field(default=5, ge=0, le=20)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ValueError(
                "webhook_url is an https:// URL (http:// only for a loopback host: 127.0.0.1, "
                "::1, localhost): approval events must not travel in clear text"
            )
        if parts.username or parts.password:
            raise ValueError("webhook_url carries no credentials: the HMAC secret signs each event")
        return value


class BudgetSettings(Section):
    """One ``[[budgets]]`` entry (see :class:`~agentguard.limits.Budget`); ``window`` in
    seconds."""

    name: str
    limit: int = Field(ge=0, lt=2**53)
    window: int = Field(gt=0, le=_MAX_SECONDS)
    per: LimitScope = LimitScope.USER
    service: str | None = None

    def budget(self) -> Budget:
        """The :class:`~agentguard.limits.Budget` this entry describes."""
        return Budget(
            self.name,
            self.limit,
            timedelta(seconds=self.window),
            per=self.per,
            service=self.service,
        )


class RateLimitSettings(Section):
    """One ``[[rate_limits]]`` entry (see :class:`~agentguard.limits.RateLimit`); ``period``
    in seconds."""

    name: str
    rate: float = Field(gt=0, allow_inf_nan=False)
    period: float = Field(default=1.0, gt=0, le=_MAX_SECONDS, allow_inf_nan=False)
    burst: int | None = Field(default=None, ge=1)
    per: LimitScope = LimitScope.KEY_FAMILY
    service: str | None = None

    def rate_limit(self) -> RateLimit:
        """The :class:`~agentguard.limits.RateLimit` this entry describes."""
        return RateLimit(
            self.name,
            self.rate,
            timedelta(seconds=self.period),
            burst=self.burst,
            per=self.per,
            service=self.service,
        )


class LimitSettings(Section):
    """``[limits]``: where budget counters and rate-limit buckets live (a ``redis://`` URL), or
    ``None`` for the main store."""

    store: str | None = None

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "limits.store is a Redis URL (redis://host:6379/0); omit it to keep the "
                "counters in the main store"
            )
        return value
