"""The client side: a DPoP key pair that signs proofs (RFC 9449 §4.2).

Proofs are signed with ``cryptography`` directly, as the verifier checks them, and verify with any
other JOSE implementation. The private key never appears in ``repr``; persist it with
:meth:`DPoPKey.to_pem` into storage only the agent can read.
"""

from __future__ import annotations

import secrets
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from agentguard.dpop._algorithms import PrivateKey, sign
from agentguard.dpop._claims import access_key_hash
from agentguard.dpop._jose import b64url_encode, dumps_compact
from agentguard.dpop._jwk import jwk_thumbprint, public_jwk

__all__ = ["SIGNING_ALGORITHMS", "DPoPKey"]

#: What :meth:`DPoPKey.generate` accepts; ``Ed25519`` signs like ``EdDSA`` under the newer name.
SIGNING_ALGORITHMS = ("ES256", "EdDSA", "Ed25519")


def _htu(url: str) -> str:
    """``url`` without its query and fragment, which ``htu`` excludes (RFC 9449 §4.2)."""
    end = len(url)
    for mark in ("?", "#"):
        found = url.find(mark)
        if found != -1:
            end = min(end, found)
    return url[:end]


class DPoPKey:
    """A DPoP signing key: ES256 (P-256) or EdDSA (Ed25519).

    Attributes:
        alg: the JWS ``alg`` its proofs carry.
    """

    __slots__ = ("_header_b64", "_jwk", "_key", "_thumbprint", "alg")

    def __init__(self, key: PrivateKey, alg: str) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1) or alg != "ES256":
                raise ValueError("an EC DPoP key must be P-256 with alg ES256")
        elif not isinstance(key, ed25519.Ed25519PrivateKey) or alg not in ("EdDSA", "Ed25519"):
            raise ValueError("an Ed25519 DPoP key needs alg EdDSA or Ed25519")
        self._key = key
        self.alg = alg
        self._jwk = public_jwk(key.public_key())
        self._thumbprint = jwk_thumbprint(self._jwk)
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": self._jwk}
        self._header_b64 = b64url_encode(dumps_compact(header))

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoPKey:
        """A new random key for ``alg``: ``ES256`` (P-256) or ``EdDSA``/``Ed25519``."""
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), alg)
        if alg in ("EdDSA", "Ed25519"):
            return cls(ed25519.Ed25519PrivateKey.generate(), alg)
        raise ValueError(f"DPoPKey signs with one of {list(SIGNING_ALGORITHMS)}")

    @classmethod
    def from_pem(cls, data: bytes, *, alg: str | None = None) -> DPoPKey:
        """Load an unencrypted PKCS#8 PEM key; ``alg`` defaults to ES256 or EdDSA by key type."""
        key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cls(key, alg or "ES256")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls(key, alg or "EdDSA")
        raise ValueError("a DPoP key must be an EC P-256 or Ed25519 private key")

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM; keep it where only the agent can read."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint of the public key: the ``jkt`` a server binds keys to."""
        return self._thumbprint

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (a fresh copy)."""
        return dict(self._jwk)

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, thumbprint={self._thumbprint!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("DPoPKey cannot be pickled; persist it with to_pem()")

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_key: str | None = None,
        nonce: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
    ) -> str:
        """A compact ``dpop+jwt`` proof for one request.

        Args:
            method: the HTTP method (``htm``).
            url: the request URL; its query and fragment are dropped for ``htu``.
            access_key: when given, adds ``ath`` (required at resource servers).
            nonce: the server's latest ``DPoP-Nonce``, when it asked for one.
            iat: issue time in seconds, fractional allowed (default: now, whole seconds);
                ``jti``: default 128 random bits.
        """
        payload: dict[str, str | float] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "htm": method,
            "htu": _htu(url),
            "iat": iat if iat is not None else int(time.time()),
        }
        if access_key is not None:
            payload["ath"] = access_key_hash(access_key)
        if nonce is not None:
            payload["nonce"] = nonce
        signing_input = f"{self._header_b64}.{b64url_encode(dumps_compact(payload))}"
        signature = sign(self._key, signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"
