"""The gateway's gates from its settings: approvals, budgets, rate limits, the operator app."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agentguard.approvals._policy import ApprovalPolicy
from agentguard.errors import ConfigurationError
from agentguard.storage._gate_protocols import ApprovalStore, OperatorStore

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._guard import Guard
    from agentguard.asgi._types import ASGIApp
    from agentguard.config import Settings

__all__ = ["GateParts", "gate_parts", "operator_app"]

logger = logging.getLogger("agentguard.gateway")

STATUS_PATH = "/oauth/approvals/{id}"


class GateParts:
    """What :func:`gate_parts` built: the Guard's keyword arguments and what the gateway must
    close on shutdown (the webhook notifier, a separate limit store)."""

    def __init__(self, options: dict[str, Any], owned: list[Any], notifier: Any) -> None:
        self.options = options
        self.owned = owned
        self.notifier = notifier


def gate_parts(settings: Settings, store: Any, clock: Clock | None) -> GateParts:
    """The Guard options ``[approvals]``, ``[[budgets]]``, ``[[rate_limits]]`` and
    ``[limits]`` describe."""
    options: dict[str, Any] = {}
    owned: list[Any] = []
    notifier = None
    approvals = settings.approvals
    if approvals.webhook_url is not None:
        secret = settings.secret_values.approval_webhook_secret
        if secret is None:
            raise ConfigurationError(
                "approvals.webhook_url needs a signing secret: set "
                "AGENTGUARD_APPROVAL_WEBHOOK_SECRET or [secrets] approval_webhook_secret_file"
            )
        from agentguard.approvals._notify import WebhookNotifier

        notifier = WebhookNotifier(
            approvals.webhook_url,
            secret.get_secret_value(),
            retries=approvals.webhook_retries,
        )
        owned.append(notifier)
    if isinstance(store, ApprovalStore):
        origin = settings.public_origin or ""
        options["approvals"] = ApprovalPolicy(
            ttl=timedelta(seconds=approvals.ttl),
            max_body=approvals.max_body,
            max_pending=approvals.max_pending,
            status_uri=origin + STATUS_PATH,
            notifier=notifier,
        )
    options["budgets"] = [entry.budget() for entry in settings.budgets]
    options["rate_limits"] = [entry.rate_limit() for entry in settings.rate_limits]
    if settings.limits.store is not None and (settings.budgets or settings.rate_limits):
        from agentguard.storage._redis_limits import RedisLimitStore

        try:
            limit_store = RedisLimitStore(settings.limits.store, clock=clock)
        except ValueError:  # redis-py's refusal of the URL may quote the password
            raise ConfigurationError(
                "limits.store is not a valid Redis URL: redis://host:6379/0"
            ) from None
        options["limit_store"] = limit_store
        owned.append(limit_store)
    return GateParts(options, owned, notifier)


def operator_app(settings: Settings, guard: Guard, store: Any, notifier: Any) -> ASGIApp | None:
    """The operator listener's app, or ``None`` when ``[operator] enabled = false`` or the
    store keeps no approvals or operator tokens."""
    if not settings.operator.enabled:
        return None
    if not isinstance(store, ApprovalStore) or not isinstance(store, OperatorStore):
        logger.warning("the store keeps no approvals or operator tokens: no operator listener")
        return None
    from agentguard.asgi._operator import OperatorApp

    app: ASGIApp = OperatorApp(guard, approvals=store, operators=store, notifier=notifier)
    return app
