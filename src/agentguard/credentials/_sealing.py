"""The vault's ciphertext format: AES-256-GCM whose associated data binds every stored field.

Layout: ``version (1 byte) || nonce (12 bytes) || AES-GCM ciphertext and tag``.

- **v2** (``0x02``, written today): the associated data is the canonical encoding of every
  column that decides how the credential is used or opened: service, owner kind, owner id,
  scope, credential id, key-encryption key id and creation time. Each field is its 4-byte
  big-endian length followed by its UTF-8 bytes, so no value can move a boundary and two
  different tuples never encode alike. Changing any of them in storage makes the row fail to
  open.
- **v1** (``0x01``, read only): bound service, owner and id but **not the scope**. A v1 row is
  never used to call a service; ``agentguard credentials reseal`` re-seals it as v2 once the
  operator has confirmed its scope.

Not bound: the storage's own row position (``pos``, insertion order for listings) and the
ciphertext itself (the tag authenticates it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentguard._model import StoredCredential

__all__ = [
    "CURRENT",
    "V1",
    "V2",
    "associated_data",
    "bound_fields",
    "open_sealed",
    "seal",
    "seal_version",
]

V1 = 1
V2 = 2
CURRENT = V2

_LABEL_V2 = "agentguard/credential/v2"
_NONCE = 12
_TAG = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def bound_fields(credential: StoredCredential) -> tuple[str, ...]:
    """The stored fields a v2 seal binds, in their fixed order."""
    return (
        credential.service,
        credential.owner_kind.value,
        credential.owner_id,
        credential.scope.value,
        credential.id,
        credential.key_id,
        str((credential.created_at - _EPOCH) // _MICROSECOND),
    )


def associated_data(fields: Sequence[str], version: int = CURRENT) -> bytes:
    """The associated data for ``fields`` (as :func:`bound_fields` orders them) in ``version``.

    v1 used only service, owner kind, owner id and credential id, joined by NUL (ids never
    contain one); it is kept to open rows written before v2.
    """
    if version == V1:
        service, owner_kind, owner_id, _scope, cid, *_rest = fields
        return "\x00".join(
            ("agentguard/credential/v1", service, owner_kind, owner_id, cid)
        ).encode()
    if version != V2:
        raise ValueError(f"no seal format v{version}")
    parts = [_LABEL_V2, *fields]
    out = bytearray()
    for part in parts:
        data = part.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def seal_version(ciphertext: bytes) -> int | None:
    """The format version of a stored ciphertext, or ``None`` if it is not one of ours."""
    if len(ciphertext) < 1 + _NONCE + _TAG or ciphertext[0] not in (V1, V2):
        return None
    return ciphertext[0]


def seal(key: bytes, plaintext: bytes, aad: bytes, version: int = CURRENT) -> bytes:
    """Encrypt ``plaintext`` under ``key`` with a fresh nonce, tagged with ``version``."""
    nonce = os.urandom(_NONCE)
    return bytes([version]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt; raises :class:`cryptography.exceptions.InvalidTag` on any mismatch."""
    nonce = ciphertext[1 : 1 + _NONCE]
    return AESGCM(key).decrypt(nonce, ciphertext[1 + _NONCE :], aad)
