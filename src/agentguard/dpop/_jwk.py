"""JSON Web Keys (RFC 7517/7518/8037): parse strictly, thumbprint (RFC 7638), load, export.

One key has exactly one thumbprint here: EC coordinates must be full length and RSA integers
must use the minimum number of octets (RFC 7518 §6.2.1.2, §6.3.1.1), because a leading zero
byte added or stripped imports as the same key yet hashes to a different thumbprint, which would
let one key escape its binding. Only the members RFC 7638 names are hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agentguard.dpop._jose import JOSEError, b64url_decode, b64url_encode, dumps_compact
from agentguard.errors import AgentGuardError

__all__ = [
    "PRIVATE_MEMBERS",
    "JWKError",
    "ParsedJWK",
    "PublicKey",
    "jwk_thumbprint",
    "load_public_key",
    "parse_jwk",
    "public_jwk",
]

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

#: Members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_EC_SIZES = {"P-256": 32, "P-384": 48, "P-521": 66}
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_OKP_SIZES = {"Ed25519": 32, "Ed448": 57, "X25519": 32, "X448": 56}
_RSA_MAX_BITS = 8192
_RSA_MAX_EXPONENT_BYTES = 8


class JWKError(AgentGuardError, ValueError):
    """The JWK is malformed, private, or unsupported; the message is fixed text, safe to show."""


@dataclass(frozen=True, slots=True)
class ParsedJWK:
    """A validated public JWK: its type, curve, decoded key members and RFC 7638 thumbprint.

    ``members`` holds ``(x, y)`` for EC, ``(x,)`` for OKP and ``(n, e)`` for RSA, as bytes.
    ``crv`` is empty for RSA.
    """

    kty: str
    crv: str
    members: tuple[bytes, ...]
    thumbprint: str

    @property
    def rsa_bits(self) -> int:
        """Modulus size in bits (0 for keys that are not RSA)."""
        return int.from_bytes(self.members[0], "big").bit_length() if self.kty == "RSA" else 0


def _member(jwk: Mapping[str, object], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JWKError(f"the jwk lacks a string '{name}' member")
    return value


def _bytes(jwk: Mapping[str, object], name: str) -> tuple[str, bytes]:
    text = _member(jwk, name)
    try:
        return text, b64url_decode(text)
    except JOSEError:
        raise JWKError(f"the jwk '{name}' member is not base64url") from None


def _digest(canonical: dict[str, str]) -> str:
    return b64url_encode(hashlib.sha256(dumps_compact(canonical)).digest())


def parse_jwk(jwk: object, *, allow_private: bool = False) -> ParsedJWK:
    """Validate ``jwk`` as an EC, OKP or RSA key and compute its thumbprint.

    Raises :class:`JWKError` for anything else: not an object, ``kty`` ``oct`` or unknown,
    unknown curve, wrong coordinate length, non-minimal RSA integers, and (unless
    ``allow_private``) any private member. Members outside RFC 7638's set are ignored.
    """
    if not isinstance(jwk, Mapping):
        raise JWKError("the jwk is not a JSON object")
    if not allow_private and not PRIVATE_MEMBERS.isdisjoint(jwk.keys()):
        raise JWKError("the jwk contains private key members")
    kty = jwk.get("kty")
    if kty == "EC":
        crv = _member(jwk, "crv")
        size = _EC_SIZES.get(crv)
        if size is None:
            raise JWKError("the jwk's EC curve is not supported")
        x_text, x = _bytes(jwk, "x")
        y_text, y = _bytes(jwk, "y")
        if len(x) != size or len(y) != size:
            raise JWKError("the jwk's EC coordinates are not full length")
        canonical = {"crv": crv, "kty": "EC", "x": x_text, "y": y_text}
        return ParsedJWK("EC", crv, (x, y), _digest(canonical))
    if kty == "OKP":
        crv = _member(jwk, "crv")
        size = _OKP_SIZES.get(crv)
        if size is None:
            raise JWKError("the jwk's OKP curve is not supported")
        x_text, x = _bytes(jwk, "x")
        if len(x) != size:
            raise JWKError("the jwk's OKP key has the wrong length")
        return ParsedJWK("OKP", crv, (x,), _digest({"crv": crv, "kty": "OKP", "x": x_text}))
    if kty == "RSA":
        n_text, n = _bytes(jwk, "n")
        e_text, e = _bytes(jwk, "e")
        if not n or not e or n[0] == 0 or e[0] == 0:
            raise JWKError("the jwk's RSA integers are not minimal-length")
        if len(n) * 8 > _RSA_MAX_BITS or len(e) > _RSA_MAX_EXPONENT_BYTES:
            raise JWKError("the jwk's RSA key is too large")
        return ParsedJWK("RSA", "", (n, e), _digest({"e": e_text, "kty": "RSA", "n": n_text}))
    if kty == "oct":
        raise JWKError("symmetric (oct) keys are not accepted")
    raise JWKError("the jwk's kty is missing or not supported")


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public (or private) EC, OKP or RSA JWK.

    base64url without padding. EC coordinates must be full length and RSA integers minimal, so
    a key has one thumbprint. Raises :class:`ValueError` for an invalid or symmetric JWK.
    """
    return parse_jwk(jwk, allow_private=True).thumbprint


def load_public_key(parsed: ParsedJWK) -> PublicKey:
    """The ``cryptography`` public key for ``parsed``; :class:`JWKError` if it is invalid.

    EC points are checked to lie on the curve; RSA exponents must be odd and at least 3.
    """
    try:
        if parsed.kty == "EC":
            x, y = parsed.members
            return ec.EllipticCurvePublicKey.from_encoded_point(
                _EC_CURVES[parsed.crv](), b"\x04" + x + y
            )
        if parsed.kty == "OKP" and parsed.crv == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(parsed.members[0])
        if parsed.kty == "RSA":
            n, e = (int.from_bytes(member, "big") for member in parsed.members)
            return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise JWKError("the jwk is not a valid public key") from None
    raise JWKError("the jwk's key type cannot verify signatures here")


def _fixed(value: int, size: int) -> str:
    return b64url_encode(value.to_bytes(size, "big"))


def _minimal(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK of a ``cryptography`` key: only the RFC 7638 members, full-length coords."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(key.curve.name)
        if crv is None:
            raise JWKError("the EC curve is not supported")
        numbers = key.public_numbers()
        size = _EC_SIZES[crv]
        return {"kty": "EC", "crv": crv, "x": _fixed(numbers.x, size), "y": _fixed(numbers.y, size)}
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    numbers_rsa = key.public_numbers()
    return {"kty": "RSA", "n": _minimal(numbers_rsa.n), "e": _minimal(numbers_rsa.e)}
