"""Stored third-party credentials (ciphertext only; the vault encrypts and decrypts)."""

from __future__ import annotations

import enum

from pydantic import Field

from agentguard.model._base import Identifier, Record, UTCDateTime

__all__ = ["CredentialOwner", "CredentialScope", "StoredCredential"]


class CredentialScope(str, enum.Enum):
    """A user-scoped credential is forwarded as is; an admin-scoped one is only used to mint."""

    USER = "user"
    ADMIN = "admin"


class CredentialOwner(str, enum.Enum):
    """Whose credential it is: one user's, or the whole account's."""

    USER = "user"
    ACCOUNT = "account"


class StoredCredential(Record):
    """A real vendor credential as it rests in storage: encrypted, bound to service and owner."""

    id: Identifier
    service: Identifier
    owner_kind: CredentialOwner
    owner_id: Identifier
    scope: CredentialScope
    ciphertext: bytes = Field(repr=False)
    key_id: str
    created_at: UTCDateTime
