"""The DPoP proof verifier: every check of RFC 9449 §4.3, in order, failing closed.

Each refusal is an :class:`~agentguard.errors.InvalidDPoPProof` with a specific
:class:`~agentguard.errors.Reason` and a fixed description (never the proof, the key or any
string the client sent), or :class:`~agentguard.errors.UseDPoPNonce` when a fresh server nonce is
needed. Nothing else escapes for any input; a failing replay cache, whatever it raises, is
:class:`~agentguard.errors.StoreUnavailable` (503), so the caller refuses the request (fail closed).

The proof's ``jti`` is burnt last, after every other check passed, so a rejected proof never
consumes a slot and a client can retry it once the cause (a missing nonce, say) is fixed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from agentguard._clock import Clock, SystemClock
from agentguard.dpop._algorithms import ALGORITHMS, DEFAULT_ALGORITHMS, Algorithm
from agentguard.dpop._claims import ProofClaims, access_key_hash, parse_claims
from agentguard.dpop._htu import normalize_htu
from agentguard.dpop._jose import JOSEError, b64url_decode, compact_parts, loads_object
from agentguard.dpop._jwk import JWKError, load_public_key, parse_jwk
from agentguard.dpop._keycache import CachedKey, KeyCache
from agentguard.dpop._nonces import NonceSource
from agentguard.errors import InvalidDPoPProof, InvalidToken, Reason, UseDPoPNonce
from agentguard.storage._outage import shield_store
from agentguard.storage._protocols import ReplayCache

__all__ = ["REPLAY_SKEW_SECONDS", "DPoPVerifier", "VerifiedProof"]

#: Extra seconds a burnt ``jti`` is remembered past the last moment its proof is acceptable
#: (``iat + iat_window``). It covers clocks that disagree: another instance whose clock runs
#: behind ours still accepts the proof a little later, and a replay store whose clock runs ahead
#: forgets the entry a little earlier. A minute costs only memory.
REPLAY_SKEW_SECONDS = 60

_HEADER_MEMBERS = frozenset({"typ", "alg", "jwk"})
_KEY_REFERENCES = frozenset({"jku", "x5u", "x5c", "x5t", "x5t#S256", "kid"})
_DPOP_TYP = "dpop+jwt"


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """What a valid proof establishes: the key's thumbprint (``jkt``), ``jti``, ``iat``, ``alg``."""

    jkt: str
    jti: str
    iat: int | float
    alg: str


def _fail(reason: Reason, description: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(description, reason=reason)


def _malformed(description: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(description)  # its default reason: Reason.DPOP_PROOF_MALFORMED


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (JSON can carry one) is kept, never an error."""
    return text.encode("utf-8", "surrogatepass")


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of a client string and a server string, whatever they contain."""
    if given.isascii() and expected.isascii():  # compare_digest takes ASCII str as it is
        return hmac.compare_digest(given, expected)
    return hmac.compare_digest(_utf8(given), _utf8(expected))


class DPoPVerifier:
    """Verifies DPoP proofs (RFC 9449 §4.3) and burns each ``jti`` once across all instances.

    Args:
        replay: shared replay cache; every instance that accepts proofs must use the same one.
        clock: time source for ``iat`` checks and replay expiry.
        algorithms: the JWS algorithms accepted; asymmetric only (RSA is opt-in).
        iat_window: seconds ``iat`` may differ from now, either way.
        max_proof_bytes: longest proof accepted, checked before any parsing.
        nonces: when given, every proof must carry a current server nonce.
        key_cache_size: how many checked proof headers (with their loaded public keys) to keep.
    """

    def __init__(
        self,
        replay: ReplayCache,
        clock: Clock,
        *,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        iat_window: int = 300,
        max_proof_bytes: int = 8192,
        nonces: NonceSource | None = None,
        key_cache_size: int = 1024,
    ) -> None:
        if isinstance(algorithms, str) or not algorithms:
            raise ValueError("algorithms must be a non-empty sequence of JWS algorithm names")
        unknown = sorted(set(algorithms) - ALGORITHMS.keys())
        if unknown:
            raise ValueError(
                f"unsupported DPoP algorithms {unknown}; choose from {sorted(ALGORITHMS)}"
            )
        if iat_window < 1:
            raise ValueError("iat_window must be at least one second")
        if max_proof_bytes < 256:
            raise ValueError("max_proof_bytes must be at least 256")
        # The shield turns whatever the cache raises into StoreUnavailable (a shielded cache,
        # as the guard passes, comes back as it is).
        self._replay = shield_store(replay, "replay cache")
        self._clock = clock
        # The real clock's now().timestamp() is time.time(), without building a datetime.
        self._timestamp: Callable[[], float] = (
            time.time if type(clock) is SystemClock else lambda: clock.now().timestamp()
        )
        self._algorithms: dict[str, Algorithm] = {name: ALGORITHMS[name] for name in algorithms}
        self._iat_window = iat_window
        self._max_proof_bytes = max_proof_bytes
        self._nonces = nonces
        self._keys = KeyCache(key_cache_size)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The accepted algorithm names, e.g. for ``dpop_signing_alg_values_supported``."""
        return tuple(self._algorithms)

    def __repr__(self) -> str:
        return (
            f"DPoPVerifier(algorithms={list(self._algorithms)}, iat_window={self._iat_window}, "
            f"nonces={self._nonces is not None})"
        )

    async def verify(
        self,
        proofs: Sequence[str],
        *,
        method: str,
        url: str,
        access_key: str | None = None,
        expected_jkt: str | None = None,
    ) -> VerifiedProof:
        """Check the request's DPoP header values and return what the single proof proves.

        Args:
            proofs: every value of the ``DPoP`` header on the request; exactly one is required.
            method: the request method, compared with ``htm`` exactly.
            url: the full external URL the server expects; compared with ``htu`` after both
                are normalised by :func:`~agentguard.dpop.normalize_htu`.
            access_key: when given, ``ath`` must be its :func:`access_key_hash`.
            expected_jkt: when given, the proof's key must have this thumbprint.

        Raises:
            InvalidDPoPProof: any check of the proof failed (its ``reason`` says which).
            InvalidToken: the proof is signed by another key than ``expected_jkt`` (RFC 9449
                §7.1: the key binding, not the proof, is what failed).
            UseDPoPNonce: nonces are configured and the proof lacks a valid one.
            StoreUnavailable: the replay cache failed (503; the proof is not accepted).
        """
        header_part, payload_part, signature_part = self._parts(proofs)
        cached = self._header(header_part)
        algorithm, jwk_thumbprint = cached.algorithm, cached.thumbprint
        try:
            signature = b64url_decode(signature_part, alphabet_checked=True)
        except JOSEError:
            raise _malformed("the DPoP proof's signature is not base64url") from None
        signing_input = f"{header_part}.{payload_part}".encode("ascii")
        if not algorithm.verify(cached.key, signing_input, signature):
            raise _fail(Reason.DPOP_BAD_SIGNATURE, "the DPoP proof's signature does not verify")
        try:
            claims = parse_claims(loads_object(b64url_decode(payload_part, alphabet_checked=True)))
        except JOSEError:
            raise _malformed("the DPoP proof's payload is not a JSON object") from None
        self._check_request(claims, method, url)
        self._check_binding(claims, jwk_thumbprint, access_key, expected_jkt)
        # The jti is burnt last (inline: one coroutine fewer on every proof).
        key, expires_at = self._replay_entry(claims, jwk_thumbprint)
        if not await self._replay.check_and_store(key, expires_at):
            raise _fail(Reason.DPOP_REPLAYED, "this DPoP proof's jti was already used")
        return VerifiedProof(jwk_thumbprint, claims.jti, claims.iat, algorithm.name)

    def _parts(self, proofs: Sequence[str]) -> list[str]:
        """The one proof's three compact-JWS parts, alphabet checked."""
        if isinstance(proofs, str):
            proofs = (proofs,)
        if len(proofs) != 1:
            raise _fail(
                Reason.DPOP_PROOF_MISSING,
                "send exactly one DPoP header"
                if proofs
                else "this request needs a DPoP proof in a DPoP header",
            )
        proof = proofs[0]
        if not isinstance(proof, str):
            raise _malformed("the DPoP header is not text")
        if len(proof) > self._max_proof_bytes:
            raise _malformed("the DPoP proof is longer than this server accepts")
        parts = compact_parts(proof)
        if parts is None:
            raise _malformed("the DPoP proof is not a compact JWS of three base64url parts")
        return parts

    def _header(self, header_part: str) -> CachedKey:
        cached = self._keys.get(header_part)
        if cached is not None:
            return cached
        try:
            header = loads_object(b64url_decode(header_part))
        except JOSEError:
            raise _malformed("the DPoP proof's header is not a JSON object") from None
        if header.get("typ") != _DPOP_TYP:
            raise _malformed("the DPoP proof's typ must be dpop+jwt")
        alg = header.get("alg")
        algorithm = self._algorithms.get(alg) if isinstance(alg, str) else None
        if algorithm is None:
            raise _fail(Reason.DPOP_ALG_NOT_ALLOWED, "the DPoP proof's alg is not allowed here")
        extra = header.keys() - _HEADER_MEMBERS
        if extra & _KEY_REFERENCES:
            raise _fail(
                Reason.DPOP_BAD_KEY,
                "the DPoP proof must carry its public key as jwk; key references are refused",
            )
        if extra:
            raise _malformed("the DPoP proof's header has parameters this server does not accept")
        jwk = header.get("jwk")
        if jwk is None:
            raise _fail(Reason.DPOP_BAD_KEY, "the DPoP proof's header lacks its jwk")
        try:
            parsed = parse_jwk(jwk)
        except JWKError as error:
            raise _fail(Reason.DPOP_BAD_KEY, str(error)) from None
        if not algorithm.fits(parsed):
            raise _fail(Reason.DPOP_BAD_KEY, "the DPoP proof's jwk does not fit its alg")
        try:
            key = load_public_key(parsed)
        except JWKError as error:
            raise _fail(Reason.DPOP_BAD_KEY, str(error)) from None
        entry = CachedKey(algorithm, parsed.thumbprint, key)
        self._keys.put(header_part, entry)
        return entry

    def _check_request(self, claims: ProofClaims, method: str, url: str) -> None:
        if claims.htm != method:
            raise _fail(Reason.DPOP_HTM_MISMATCH, "the DPoP proof's htm is not the request method")
        try:
            expected = normalize_htu(url)
        except ValueError:
            raise _fail(Reason.DPOP_HTU_MISMATCH, "the request URL is not a valid URL") from None
        if claims.htu != url:
            try:
                given = normalize_htu(claims.htu)
            except ValueError:
                raise _fail(Reason.DPOP_HTU_MISMATCH, "the DPoP proof's htu is not a URL") from None
            if given != expected:
                raise _fail(Reason.DPOP_HTU_MISMATCH, "the DPoP proof's htu is not the request URL")
        now = self._timestamp()
        if not now - self._iat_window <= claims.iat <= now + self._iat_window:
            raise _fail(
                Reason.DPOP_IAT_OUT_OF_WINDOW,
                f"the DPoP proof's iat must be within {self._iat_window} seconds of now",
            )

    def _check_binding(
        self,
        claims: ProofClaims,
        jkt: str,
        access_key: str | None,
        expected_jkt: str | None,
    ) -> None:
        if access_key is not None:
            try:
                expected_ath = access_key_hash(access_key)
            except UnicodeEncodeError:
                raise _fail(Reason.DPOP_ATH_MISMATCH, "the access key is not ASCII") from None
            if claims.ath is None:
                raise _fail(Reason.DPOP_ATH_MISMATCH, "the DPoP proof lacks the ath claim")
            if not _same(claims.ath, expected_ath):
                raise _fail(Reason.DPOP_ATH_MISMATCH, "the DPoP proof's ath is not the key's")
        if expected_jkt is not None and not _same(jkt, expected_jkt):
            # RFC 9449 §7.1: a proof by another key than the token's is the token's failure.
            raise InvalidToken(
                "the DPoP proof is signed by another key than bound",
                reason=Reason.DPOP_BINDING_MISMATCH,
            )
        if self._nonces is not None and (
            claims.nonce is None or not self._nonces.is_valid(claims.nonce)
        ):
            raise UseDPoPNonce(self._nonces.current())

    def _replay_entry(self, claims: ProofClaims, jkt: str) -> tuple[bytes, datetime]:
        """The replay cache's key for this proof and the moment it may be forgotten."""
        key = hashlib.sha256(f"{jkt}:{claims.jti}".encode("utf-8", "surrogatepass")).digest()
        expires_at = datetime.fromtimestamp(
            claims.iat + self._iat_window + REPLAY_SKEW_SECONDS, timezone.utc
        )
        return key, expires_at
