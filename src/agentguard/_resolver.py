"""KeyResolver: a presented access key to a live Principal, on every call, in one round trip.

Nothing is cached: the key record, the user, the account and the membership are read together
each time, so disabling a user, removing a membership, closing an account or revoking a key is
in force on the very next request, on every instance.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Protocol, TypedDict, runtime_checkable

from agentguard._clock import Clock
from agentguard._keys._format import hash_key, parse_key
from agentguard._model import KeyKind, KeyRecord, Principal
from agentguard.errors import InvalidToken, Reason
from agentguard.storage._outage import shield_store
from agentguard.storage._protocols import KeyLookup, KeyStore

__all__ = ["KeyIds", "KeyResolver", "TokenResolver", "key_context", "liveness_failure"]


@runtime_checkable
class TokenResolver(Protocol):
    """Resolves credentials that are not agentguard keys, such as RFC 9068 JWT access tokens.

    ``accepts`` must be cheap and must not claim agentguard keys (``ag_at_``/``ag_rt_``);
    ``resolve`` returns a live :class:`Principal` (permissions still read from the user store)
    or raises :class:`~agentguard.errors.InvalidToken` with a reason. A resolver that binds
    tokens to DPoP keys sets ``Principal.jkt``.
    """

    def accepts(self, token: str) -> bool: ...

    async def resolve(self, token: str) -> Principal: ...


class KeyIds(TypedDict, total=False):
    """The public ids of a key and its owner, as audit events and errors carry them."""

    key_id: str
    family_id: str
    user_id: str
    workspace_id: str
    account_id: str


def key_context(key: KeyRecord) -> KeyIds:
    """The audit ids of a key (never its hash or secret)."""
    return {
        "key_id": key.id,
        "family_id": key.family_id,
        "user_id": key.user_id,
        "workspace_id": key.workspace_id,
        "account_id": key.account_id,
    }


def liveness_failure(found: KeyLookup, now: datetime) -> Reason | None:
    """The first fact that makes this key unusable now, or ``None`` when it is live.

    Checked in order: revoked, expired, account closed (or gone), user disabled (or gone),
    membership removed. Key kind and refresh reuse are the caller's to check.
    """
    key = found.key
    if key.revoked_at is not None:
        return Reason.REVOKED
    if key.expired(now):
        return Reason.EXPIRED
    if found.account is None or not found.account.active:
        return Reason.ACCOUNT_CLOSED
    if found.user is None or not found.user.enabled or found.user.account_id != key.account_id:
        return Reason.USER_DISABLED
    if not found.member:
        return Reason.NOT_A_MEMBER
    return None


class KeyResolver:
    """Resolves access keys live. Raises :class:`InvalidToken` with a distinct reason."""

    def __init__(self, store: KeyStore, clock: Clock) -> None:
        # Shielded once here (a shielded store, as the guard passes, comes back as it is), so a
        # lookup needs no outage context of its own: whatever the store raises is a 503.
        self.store = shield_store(store, "key store")
        self.clock = clock

    async def lookup(self, presented: str) -> KeyLookup:
        """Parse ``presented`` and fetch its record; unknown or malformed keys raise."""
        digest = hash_key(parse_key(presented).value)
        found = await self.store.lookup(digest)
        if found is None or not hmac.compare_digest(found.key.key_hash, digest):
            raise InvalidToken(reason=Reason.UNKNOWN_KEY)
        return found

    async def resolve(self, presented: str) -> Principal:
        """The Principal for access key ``presented``, from live state."""
        found = await self.lookup(presented)
        key = found.key
        if key.kind is not KeyKind.ACCESS:
            raise InvalidToken(reason=Reason.WRONG_KEY_KIND).with_context(**key_context(key))
        reason = liveness_failure(found, self.clock.now())
        if reason is not None:
            raise InvalidToken(reason=reason).with_context(**key_context(key))
        user = found.user
        if user is None:  # liveness_failure already refused this; keeps the type checker honest
            raise InvalidToken(reason=Reason.USER_DISABLED)
        return Principal(
            user_id=key.user_id,
            workspace_id=key.workspace_id,
            account_id=key.account_id,
            key_id=key.id,
            family_id=key.family_id,
            grants=user.grants.narrow(key.scope),
            expires_at=key.expires_at,
            jkt=key.jkt,
            audience=key.audience,
        )
