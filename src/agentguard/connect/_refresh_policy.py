"""What renewing a connected account's token needs, and when it is due.

The two Protocols a renewal works against (the vendor and the store that also holds the refresh
leases), the rules that decide whether a vendor token is expired or due for renewal, the RFC 7009
``token_type_hint`` values, and the audit event of an action on a connection (ids and outcomes,
never a token).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from agentguard._model import ConnectedAccount
from agentguard._secret import Secret
from agentguard.audit._events import Action, AuditEvent, Decision, Scalar
from agentguard.connect._settings import OAuthClientConfig
from agentguard.connect._tokens import VendorTokens
from agentguard.errors import Reason
from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore

__all__ = [
    "ACCESS_HINT",
    "REFRESH_HINT",
    "STORE_ROLE",
    "AccountStore",
    "TokenVendor",
    "connection_event",
    "expired",
    "refresh_due",
]

STORE_ROLE = "connection store"
"""The store's name in outage logs and errors."""
REFRESH_HINT = "refresh_token"  # RFC 7009 token_type_hint values
ACCESS_HINT = "access_token"


class TokenVendor(Protocol):
    """What the accounts need of a vendor: :class:`~agentguard.connect.VendorClient` fits."""

    @property
    def config(self) -> OAuthClientConfig: ...

    async def refresh(self, refresh_token: Secret) -> VendorTokens: ...

    async def revoke(self, token: Secret, *, token_type_hint: str = ...) -> bool: ...


class AccountStore(ConnectionStore, ConnectFlowStore, Protocol):
    """A store of connections that also holds the refresh leases."""


def expired(record: ConnectedAccount, now: datetime) -> bool:
    """Whether the vendor's access token can no longer be used."""
    return record.expires_at is not None and now >= record.expires_at


def refresh_due(record: ConnectedAccount, now: datetime, ahead: float) -> bool:
    """Whether to renew now: within ``ahead`` seconds of expiry, but never earlier than half
    the token's life (a vendor issuing tokens shorter than ``ahead`` must not be asked on
    every call). Without a refresh token, only once expired (nothing can renew it)."""
    if record.expires_at is None:
        return False
    if record.refresh_token is None:
        return now >= record.expires_at
    lifetime = max(record.expires_at - record.updated_at, timedelta(0))
    window = min(timedelta(seconds=ahead), lifetime / 2)
    return now >= record.expires_at - window


def connection_event(
    action: Action,
    record: ConnectedAccount,
    now: datetime,
    *,
    decision: Decision = Decision.ALLOW,
    reason: Reason | None = None,
    detail: Mapping[str, Scalar] | None = None,
) -> AuditEvent:
    """The audit event of ``action`` on ``record``: ids and outcomes, never a token."""
    return AuditEvent(
        action=action,
        ts=now,
        decision=decision,
        reason=None if reason is None else reason.value,
        user_id=record.user_id,
        service=record.service,
        detail={"connection_id": record.id, **(detail or {})},
    )
