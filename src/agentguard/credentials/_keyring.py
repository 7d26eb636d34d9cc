"""Key-encryption keys: the AES-256 keys that wrap real credentials at rest.

A :class:`KeyRing` holds one or more named 32-byte keys and names the primary one new
ciphertexts use. Rotation: add a new key, make it primary, re-encrypt (``CredentialVault.rekey``),
then drop the old key. Keys come from configuration, typically an environment variable::

    AGENTGUARD_KEK="kek-2026-11:BASE64URL_32_BYTES,kek-2026-05:BASE64URL_32_BYTES"

The first entry is the primary. Keys are never printed: ``repr`` shows ids only. Each sealed
credential binds the id of its key, so a key is renamed by rotating to a new id, not by editing
the list.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from typing import NoReturn

from agentguard.errors import ConfigurationError

__all__ = ["KeyRing"]

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class KeyRing:
    """Named AES-256 key-encryption keys and the id of the primary one."""

    __slots__ = ("_keys", "primary")

    def __init__(self, keys: Mapping[str, bytes], primary: str) -> None:
        if primary not in keys:
            raise ConfigurationError("the primary key-encryption key id is not in the key ring")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise ConfigurationError("a key-encryption key id is 1-64 of A-Z a-z 0-9 . _ -")
            if len(key) != 32:
                raise ConfigurationError(f"key-encryption key {key_id} must be 32 bytes")
        self._keys = dict(keys)
        self.primary = primary

    @classmethod
    def generate(cls, key_id: str = "kek-1") -> KeyRing:
        """A ring with one fresh random key (tests, demos, first setup)."""
        return cls({key_id: secrets.token_bytes(32)}, key_id)

    @classmethod
    def from_string(cls, text: str) -> KeyRing:
        """Parse ``id:base64key[,id:base64key...]``; the first id is primary."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            key_id, sep, encoded = item.partition(":")
            if not sep:
                raise ConfigurationError("key-encryption keys are written 'id:base64key'")
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError):
                raise ConfigurationError(f"key-encryption key {key_id} is not base64") from None
            keys[key_id] = key
            order.append(key_id)
        if not order:
            raise ConfigurationError("no key-encryption key configured")
        return cls(keys, order[0])

    @classmethod
    def from_env(cls, variable: str = "AGENTGUARD_KEK") -> KeyRing:
        """The ring in environment variable ``variable`` (see :meth:`from_string`)."""
        text = os.environ.get(variable)
        if not text:
            raise ConfigurationError(f"set {variable} to 'id:base64key' (32 random bytes)")
        return cls.from_string(text)

    def key(self, key_id: str) -> bytes:
        """The key with this id; :class:`ConfigurationError` if the ring lacks it."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise ConfigurationError(
                f"key-encryption key {key_id} is not configured; it is needed to decrypt"
            ) from None

    @property
    def ids(self) -> tuple[str, ...]:
        """The key ids in the ring."""
        return tuple(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(ids={list(self._keys)}, primary={self.primary!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyRing cannot be pickled")
