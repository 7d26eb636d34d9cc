"""Stored third-party credentials (ciphertext only; the vault encrypts and decrypts)."""

from __future__ import annotations

import enum

from pydantic import Field

from agentguard._model._base import Identifier, Record, UTCDateTime

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
    """A real vendor credential as it rests in storage: encrypted and bound to its fields.

    The vault seals ``ciphertext`` with every other field (service, owner kind, owner id,
    scope, id, key id, creation time) as associated data, so a store or a database writer
    that changes any of them makes the record refuse to open. A store must return these
    fields exactly as written (times to the microsecond).
    """

    id: Identifier
    service: Identifier
    owner_kind: CredentialOwner
    owner_id: Identifier
    scope: CredentialScope
    ciphertext: bytes = Field(repr=False)
    key_id: str
    created_at: UTCDateTime
