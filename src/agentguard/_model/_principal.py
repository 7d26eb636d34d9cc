"""The resolved caller of one request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agentguard._model._grants import Grants, Level

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, resolved live for this request, and what they may do right now.

    ``grants`` are the effective grants: the user's current grants narrowed by the key's scope.
    A Principal is never cached across requests. ``jkt`` is the thumbprint of the DPoP key the
    credential is bound to; ``audience`` the resource it was issued for (RFC 8707), ``None`` for
    a deployment-wide key (checked with :func:`agentguard._audience.check_audience`).
    """

    user_id: str
    workspace_id: str
    account_id: str
    key_id: str
    family_id: str
    grants: Grants
    expires_at: datetime
    jkt: str | None = None
    audience: str | None = None

    def allows(self, service: str, level: Level) -> bool:
        """Whether the effective grants reach ``level`` on ``service``."""
        return self.grants.allows(service, level)
