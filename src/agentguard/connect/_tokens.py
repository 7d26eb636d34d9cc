"""What a vendor's token endpoint hands back, held as :class:`~agentguard.Secret` values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agentguard._secret import Secret

__all__ = ["VendorTokens"]


@dataclass(frozen=True)
class VendorTokens:
    """A vendor's token response, parsed and checked (``token_type`` was Bearer).

    Attributes:
        access_token: the token sent upstream.
        refresh_token: the refresh token, or ``None`` when the vendor issued none (a refresh
            response without one keeps the previous refresh token: RFC 6749 §6).
        expires_at: from ``expires_in``; ``None`` when the vendor did not say.
        scopes: the granted ``scope``, split; the requested scopes when the vendor omitted it.
        scope_given: whether the vendor's answer carried ``scope`` (``False``: ``scopes`` are
            the requested ones; RFC 6749 §5.1 lets a vendor omit it when unchanged).
    """

    access_token: Secret
    refresh_token: Secret | None
    expires_at: datetime | None
    scopes: tuple[str, ...] = ()
    scope_given: bool = True
