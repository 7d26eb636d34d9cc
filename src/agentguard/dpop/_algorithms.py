"""The JWS algorithms a DPoP proof may use, each tied to the one key type it may be used with.

Only asymmetric algorithms exist here: ``none`` and ``HS*`` cannot be configured at all. Binding
each algorithm to its key type (kty, curve, minimum RSA size) before any cryptography runs is what
stops algorithm-confusion attacks. Signatures are verified with ``cryptography`` directly; ECDSA
signatures travel as raw ``r || s`` (RFC 7518 §3.4) and are converted to DER here, after their
length is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agentguard.dpop._jwk import ParsedJWK, PublicKey

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "MIN_RSA_BITS",
    "Algorithm",
    "PrivateKey",
    "sign",
]

#: Accepted unless configured otherwise; RSA (``RS*``, ``PS*``) is opt-in.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA", "Ed25519")
MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

Verifier = Callable[[PublicKey, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A JWS ``alg``: the key type and curve it requires and how it verifies."""

    name: str
    kty: str
    crv: str
    verify: Verifier

    def fits(self, jwk: ParsedJWK) -> bool:
        """Whether ``jwk`` is the kind of key this algorithm may be used with."""
        if jwk.kty != self.kty or jwk.crv != self.crv:
            return False
        return self.kty != "RSA" or jwk.rsa_bits >= MIN_RSA_BITS


def _ecdsa(hash_type: type[hashes.HashAlgorithm], size: int) -> Verifier:
    algorithm = ec.ECDSA(hash_type())
    # Concrete key classes already found to be EC public keys: ``isinstance`` against the ABC
    # costs a third of a microsecond on every proof, a set lookup a few nanoseconds.
    ec_types: set[type] = set()

    def verify(key: PublicKey, message: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * size:
            return False
        if type(key) not in ec_types:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            ec_types.add(type(key))
        checked = cast(ec.EllipticCurvePublicKey, key)  # its class passed the isinstance above
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            checked.verify(encode_dss_signature(r, s), message, algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


def _eddsa(key: PublicKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64 or not isinstance(key, ed25519.Ed25519PublicKey):
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _rsa(hash_type: type[hashes.HashAlgorithm], *, pss: bool) -> Verifier:
    hash_algorithm = hash_type()
    scheme: padding.AsymmetricPadding = (
        padding.PSS(padding.MGF1(hash_type()), hash_algorithm.digest_size)
        if pss
        else padding.PKCS1v15()
    )

    def verify(key: PublicKey, message: bytes, signature: bytes) -> bool:
        if not isinstance(key, rsa.RSAPublicKey) or len(signature) != (key.key_size + 7) // 8:
            return False
        try:
            key.verify(signature, message, scheme, hash_algorithm)
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify


def _table() -> dict[str, Algorithm]:
    specs = [
        Algorithm("ES256", "EC", "P-256", _ecdsa(hashes.SHA256, 32)),
        Algorithm("ES384", "EC", "P-384", _ecdsa(hashes.SHA384, 48)),
        Algorithm("ES512", "EC", "P-521", _ecdsa(hashes.SHA512, 66)),
        Algorithm("EdDSA", "OKP", "Ed25519", _eddsa),
        Algorithm("Ed25519", "OKP", "Ed25519", _eddsa),
    ]
    for bits, hash_type in ((256, hashes.SHA256), (384, hashes.SHA384), (512, hashes.SHA512)):
        specs.append(Algorithm(f"RS{bits}", "RSA", "", _rsa(hash_type, pss=False)))
        specs.append(Algorithm(f"PS{bits}", "RSA", "", _rsa(hash_type, pss=True)))
    return {spec.name: spec for spec in specs}


#: Every algorithm that can be enabled, by JWS name.
ALGORITHMS: dict[str, Algorithm] = _table()


def sign(key: PrivateKey, message: bytes) -> bytes:
    """A JWS signature by ``key``: raw ``r || s`` for ES256, the plain signature for Ed25519."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")
