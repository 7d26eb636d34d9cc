"""Stored key records and the secrets handed out once at issuance."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from agentguard._model._base import Identifier, Record, UTCDateTime
from agentguard._model._grants import Grants
from agentguard._secret import Secret

__all__ = ["IssuedKeys", "KeyKind", "KeyRecord"]


class KeyKind(str, enum.Enum):
    """An access key calls APIs; a refresh key can only mint a new access key."""

    ACCESS = "access"
    REFRESH = "refresh"


class KeyRecord(Record):
    """What the server keeps about one key: its SHA-256 hash, never the key.

    Attributes:
        id: public identifier, safe to log and to show in audit events.
        key_hash: SHA-256 of the full key string.
        family_id: every key descended from one issuance shares it; reuse revokes the family.
        scope: optional narrowing of the user's grants; ``None`` means the user's full grants.
        jkt: RFC 7638 thumbprint of the DPoP key this key is bound to, if any.
        audience: the resource this key was issued for (RFC 8707), normalised; ``None`` for a
            deployment-wide key (see :mod:`agentguard._audience`).
        used_at: for refresh keys, when it was exchanged (a refresh key works once).
    """

    id: Identifier
    kind: KeyKind
    key_hash: bytes = Field(min_length=32, max_length=32, repr=False)
    family_id: Identifier
    user_id: Identifier
    workspace_id: Identifier
    account_id: Identifier
    created_at: UTCDateTime
    expires_at: UTCDateTime
    revoked_at: UTCDateTime | None = None
    revoked_reason: str | None = None
    used_at: UTCDateTime | None = None
    scope: Grants | None = None
    jkt: str | None = None
    audience: str | None = Field(default=None, max_length=2048)

    def expired(self, now: datetime) -> bool:
        """Whether the key is past its expiry at ``now`` (expiry instant itself included)."""
        return now >= self.expires_at

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class IssuedKeys:
    """A fresh access/refresh pair. The secrets exist here once; the server keeps only hashes."""

    access_key: Secret
    refresh_key: Secret
    access: KeyRecord
    refresh: KeyRecord

    @property
    def token_type(self) -> str:
        """``"DPoP"`` for sender-constrained keys, ``"Bearer"`` otherwise (RFC 9449 §5)."""
        return "DPoP" if self.access.jkt is not None else "Bearer"

    def expires_in(self, now: datetime) -> int:
        """Whole seconds until the access key expires, as the token response reports it."""
        return max(0, int((self.access.expires_at - now).total_seconds()))
