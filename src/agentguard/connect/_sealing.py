"""Sealing a connected account's vendor tokens: AES-256-GCM under the vault's key ring.

Layout: ``0x01 || nonce (12 bytes) || AES-GCM ciphertext and tag``, the vault's layout
(:mod:`agentguard.credentials._sealing`) under the vault's key ring, with its own label. The
associated data is the canonical encoding (each field as its 4-byte big-endian length and its
UTF-8 bytes) of::

    "agentguard/connection/v1", service, user id, connection id, key id,
    creation time (microseconds since the epoch), "access" | "refresh"

so a row moved to another user or service, a ciphertext copied from another connection, or a
refresh token put in the access token's slot no longer opens. Not bound: ``version``,
``status``, ``expires_at``, ``scopes`` and ``updated_at``, which change on every refresh (a
writer that can edit them can at worst mark a connection broken or make it refresh early).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentguard._model import ConnectedAccount
from agentguard._secret import Secret
from agentguard.errors import AgentGuardError, ConfigurationError

if TYPE_CHECKING:  # agentguard.credentials imports the services, which import this package
    from agentguard.credentials._keyring import KeyRing

__all__ = ["LABEL", "ConnectionSealer", "SealBroken", "Slot", "associated_data"]

LABEL = "agentguard/connection/v1"
_VERSION = 1
_NONCE = 12
_MINIMUM = 1 + _NONCE + 16  # version, nonce, tag
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

Slot = Literal["access", "refresh"]


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return bytes([_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    nonce = ciphertext[1 : 1 + _NONCE]
    return AESGCM(key).decrypt(nonce, ciphertext[1 + _NONCE :], aad)


class SealBroken(AgentGuardError):
    """A connection's token does not open: tampered, misfiled or moved row, altered
    ciphertext, or a key-encryption key that is not configured. The message names the
    connection id, never a token.

    Attributes:
        connection_id: the connection whose token does not open.
        cause: why, for logs and the audit: ``key_missing`` (its key-encryption key is not
            configured), ``does_not_decrypt`` (a bound field or the ciphertext was altered, or
            the key is wrong), ``not_sealed`` or ``not_text``.
    """

    def __init__(self, message: str, *, connection_id: str, cause: str) -> None:
        self.connection_id = connection_id
        self.cause = cause
        super().__init__(message)


def associated_data(record: ConnectedAccount, slot: Slot) -> bytes:
    """The associated data that binds the token in ``slot`` to ``record``'s identity."""
    micros = (record.created_at - _EPOCH) // _MICROSECOND
    fields = (
        LABEL,
        record.service,
        record.user_id,
        record.id,
        record.key_id,
        str(micros),
        slot,
    )
    out = bytearray()
    for field in fields:
        data = field.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


class ConnectionSealer:
    """Seals and opens the tokens of :class:`~agentguard.connect.ConnectedAccount` rows."""

    __slots__ = ("keyring",)

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

    def __repr__(self) -> str:
        return f"ConnectionSealer(keyring={self.keyring!r})"

    def seal(
        self, record: ConnectedAccount, access: Secret, refresh: Secret | None
    ) -> ConnectedAccount:
        """``record`` under the primary key, holding ``access`` and ``refresh`` sealed."""
        keyed = record.model_copy(update={"key_id": self.keyring.primary})
        key = self.keyring.key(keyed.key_id)
        sealed_access = _seal(key, access.reveal().encode(), associated_data(keyed, "access"))
        sealed_refresh = None
        if refresh is not None:
            aad = associated_data(keyed, "refresh")
            sealed_refresh = _seal(key, refresh.reveal().encode(), aad)
        return keyed.model_copy(
            update={"access_token": sealed_access, "refresh_token": sealed_refresh}
        )

    def open(self, record: ConnectedAccount, slot: Slot) -> Secret | None:
        """The token in ``slot``, or ``None`` when the slot is empty (no refresh token).

        Raises :class:`SealBroken` when it does not open.
        """
        ciphertext = record.access_token if slot == "access" else record.refresh_token
        if ciphertext is None:
            return None
        if len(ciphertext) < _MINIMUM or ciphertext[0] != _VERSION:
            raise SealBroken(
                f"connection {record.id}: the {slot} token is not a sealed token",
                connection_id=record.id,
                cause="not_sealed",
            )
        try:
            key = self.keyring.key(record.key_id)
        except ConfigurationError:
            raise SealBroken(
                f"connection {record.id}: key-encryption key {record.key_id} is not configured",
                connection_id=record.id,
                cause="key_missing",
            ) from None
        try:
            plaintext = _open(key, ciphertext, associated_data(record, slot))
        except InvalidTag:
            raise SealBroken(
                f"connection {record.id}: the {slot} token does not decrypt: a bound field "
                "(service, user, id, key id, creation time, slot) or the ciphertext was "
                "altered, or the key is wrong",
                connection_id=record.id,
                cause="does_not_decrypt",
            ) from None
        try:
            return Secret(plaintext.decode())
        except UnicodeDecodeError:
            raise SealBroken(
                f"connection {record.id}: the {slot} token is not text",
                connection_id=record.id,
                cause="not_text",
            ) from None
