"""The claims of a DPoP proof (RFC 9449 §4.2), checked for type before any is compared.

A wrong type is malformed, not a mismatch: ``iat`` must be a JSON number (an RFC 7519
NumericDate, which may be non-integer; never a bool, a numeric string, or a non-finite value)
and ``jti`` a string of 1 to 256 characters. ``ath`` and ``nonce`` are
read here and compared by the verifier only when it needs them; other claims are ignored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import NamedTuple

from agentguard.dpop._jose import b64url_encode
from agentguard.errors import InvalidDPoPProof, Reason

__all__ = ["MAX_JTI_LENGTH", "ProofClaims", "access_key_hash", "parse_claims"]

MAX_JTI_LENGTH = 256


def access_key_hash(access_key: str) -> str:
    """The ``ath`` claim for ``access_key``: base64url(SHA-256(ASCII)) without padding.

    Raises :class:`ValueError` (``UnicodeEncodeError``) if the key is not ASCII.
    """
    return b64url_encode(hashlib.sha256(access_key.encode("ascii")).digest())


class ProofClaims(NamedTuple):
    """The typed claims of a proof payload; ``ath`` and ``nonce`` are ``None`` when absent.

    A NamedTuple rather than a frozen dataclass: one is built per proof, at a third of the cost.
    """

    jti: str
    htm: str
    htu: str
    iat: int | float
    ath: str | None
    nonce: str | None


def _malformed(description: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(description, reason=Reason.DPOP_PROOF_MALFORMED)


def _numeric_date(value: object) -> int | float:
    """An RFC 7519 NumericDate: a JSON integer or a finite non-integer number, never a bool.

    Integers of any size are kept exact (an absurd one simply fails the window check).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _malformed("the DPoP proof needs a numeric 'iat' (seconds since the epoch)")
    if isinstance(value, float) and not math.isfinite(value):
        raise _malformed("the DPoP proof's 'iat' must be a finite number")
    return value


def parse_claims(payload: Mapping[str, object]) -> ProofClaims:
    """Check the required claims' types; raise :class:`InvalidDPoPProof` (malformed) if wrong."""
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI_LENGTH:
        raise _malformed(f"the DPoP proof needs a 'jti' string of 1 to {MAX_JTI_LENGTH} characters")
    htm = payload.get("htm")
    if not isinstance(htm, str):
        raise _malformed("the DPoP proof needs an 'htm' string")
    htu = payload.get("htu")
    if not isinstance(htu, str):
        raise _malformed("the DPoP proof needs an 'htu' string")
    raw_iat = payload.get("iat")
    # an exact int is the usual case; anything else gets the full NumericDate check
    iat = raw_iat if type(raw_iat) is int else _numeric_date(raw_iat)
    ath, nonce = payload.get("ath"), payload.get("nonce")
    if ath is not None and not isinstance(ath, str):
        raise _malformed("the DPoP proof's 'ath' claim must be a string")
    if nonce is not None and not isinstance(nonce, str):
        raise _malformed("the DPoP proof's 'nonce' claim must be a string")
    return ProofClaims(jti, htm, htu, iat, ath, nonce)
