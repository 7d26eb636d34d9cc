"""The principal of the request being handled, for code far from the web layer.

The middleware sets it before calling the app and resets it in ``finally``; a data layer (for
example :mod:`agentguard.rls`) reads it with :func:`current_principal`.
"""

from __future__ import annotations

from contextvars import ContextVar

from agentguard._model._principal import Principal

__all__ = ["current_principal", "principal_var"]

principal_var: ContextVar[Principal | None] = ContextVar("agentguard_principal", default=None)


def current_principal() -> Principal:
    """The Principal of the current request; ``LookupError`` outside a guarded request."""
    principal = principal_var.get()
    if principal is None:
        raise LookupError("no agentguard principal: this code is not running in a guarded request")
    return principal
