"""Rows as an older agentguard wrote them: a credential sealed in format v1 (scope not bound)."""

from __future__ import annotations

from agentguard import StoredCredential
from agentguard.credentials import KeyRing
from agentguard.credentials import _sealing as sealing

__all__ = ["as_v1"]


def as_v1(credential: StoredCredential, plaintext: str, keyring: KeyRing) -> StoredCredential:
    """``credential`` re-sealed exactly as the v1 vault sealed it (its own key id)."""
    aad = sealing.associated_data(sealing.bound_fields(credential), sealing.V1)
    key = keyring.key(credential.key_id)
    sealed = sealing.seal(key, plaintext.encode(), aad, sealing.V1)
    return credential.model_copy(update={"ciphertext": sealed})
