"""JWTAccessTokenResolver: RFC 9068 JWT access tokens from an existing authorization server.

Keycloak, Auth0, Entra ID, Okta and others issue signed JWT access tokens. This resolver checks
one strictly and then resolves its subject live, like an agentguard key:

1. shape and size, then the JOSE header, parsed with duplicate-member and NaN rejection:
   ``alg`` from an explicit asymmetric allow-list (``none`` and ``HS*`` cannot be configured),
   ``typ`` ``at+jwt``, no ``crit``/``b64``/``cty``, and no key carried in the token
   (``jwk``/``jku``/``x5u``/``x5c``): keys only come from the issuer's JWKS;
2. the signature, with the issuer's key for ``kid`` (JWKS cached, refetched on rotation);
3. ``iss`` exactly, ``aud`` containing this resource (RFC 8707), ``exp``/``nbf``/``iat``
   against the injected clock with a small leeway;
4. ``cnf.jkt`` sets ``Principal.jkt``, so the guard demands a DPoP proof from that key;
5. the subject is mapped to a user whose grants, account and membership are read live from
   the :class:`~agentguard.storage.DirectoryStore`; ``scope`` can only narrow them.

Each refusal is :class:`~agentguard.errors.InvalidToken` (401) with a fixed description that
never quotes the token; a JWKS that cannot be fetched refuses with 503.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import httpx

from agentguard._clock import Clock, SystemClock
from agentguard._model import Principal
from agentguard.dpop._algorithms import ALGORITHMS, Algorithm
from agentguard.dpop._jose import JOSEError, b64url_decode, compact_parts, loads_object
from agentguard.errors import ConfigurationError, InvalidToken, Reason
from agentguard.resolvers._claims import (
    SubjectMapping,
    check_access_token_kind,
    confirmation_jkt,
    numeric_date,
    token_key_id,
)
from agentguard.resolvers._jwks import JWKSCache
from agentguard.storage._protocols import DirectoryStore

__all__ = ["DEFAULT_JWT_ALGORITHMS", "JWTAccessTokenResolver"]

#: The signature algorithms authorization servers use most; all asymmetric.
DEFAULT_JWT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")

#: Header members that would let the token choose its own key or change how it is processed.
_FORBIDDEN_HEADER = frozenset({"crit", "b64", "cty", "zip", "enc", "jwk", "jku", "x5u", "x5c"})


def _refuse(description: str, reason: Reason = Reason.UNKNOWN_KEY) -> InvalidToken:
    return InvalidToken(description, reason=reason)


def _malformed(
    description: str = "the token is not a well-formed JWT access token",
) -> InvalidToken:
    return InvalidToken(description, reason=Reason.MALFORMED_KEY)


def _named(error: InvalidToken, key_id: str) -> InvalidToken:
    """``error`` naming the token's audit id (a new error), unless it already names a key."""
    if error.audit_context.get("key_id"):
        return error
    return error.with_context(key_id=key_id)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    return numeric_date(claims, name, source="token")


def _media_type(value: str) -> str:
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


class JWTAccessTokenResolver:
    """Resolves RFC 9068 JWT access tokens of one issuer into live Principals.

    Pass it to ``Guard(token_resolvers=[...])``; agentguard keys keep working next to it.

    Args:
        issuer: the ``iss`` value, exactly as the authorization server writes it.
        audience: this resource's identifier(s) (RFC 8707); the token's ``aud`` must contain
            one of them.
        jwks_url: the issuer's ``jwks_uri``.
        directory: the user store the subject is looked up in, live.
        algorithms: accepted JWS algorithms, asymmetric only.
        token_types: accepted ``typ`` header values (``application/`` prefix optional, case
            ignored). RFC 9068 says ``at+jwt``; add ``"jwt"`` for servers that do not (Entra ID).
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        clock: time source.
        user_claim / user_id / workspace_id / workspace_claim / narrow_by_scope: see
            :class:`~agentguard.resolvers.SubjectMapping`.
        max_token_bytes: longer tokens are refused before any parsing.
        jwks_ttl / jwks_min_refresh_interval / client / transport: see
            :class:`~agentguard.resolvers.JWKSCache`.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Sequence[str],
        jwks_url: str,
        directory: DirectoryStore,
        algorithms: Sequence[str] = DEFAULT_JWT_ALGORITHMS,
        token_types: Sequence[str] = ("at+jwt",),
        leeway: int = 30,
        clock: Clock | None = None,
        user_claim: str = "sub",
        user_id: Callable[[str], str | None] | None = None,
        workspace_id: str | None = None,
        workspace_claim: str = "workspace",
        narrow_by_scope: bool = True,
        max_token_bytes: int = 8192,
        jwks_ttl: float = 600.0,
        jwks_min_refresh_interval: float = 30.0,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not issuer:
            raise ConfigurationError("issuer is required")
        if not isinstance(audience, (str, Sequence)):  # e.g. ANY_AUDIENCE: introspection only
            raise ConfigurationError(
                "audience is required: RFC 9068 JWT access tokens always name their resource"
            )
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        if not audiences or not all(isinstance(aud, str) and aud for aud in audiences):
            raise ConfigurationError("audience is required: the resource identifier (RFC 8707)")
        if isinstance(algorithms, str) or not algorithms:
            raise ConfigurationError("algorithms is a non-empty sequence of JWS algorithm names")
        unknown = sorted(set(algorithms) - ALGORITHMS.keys())
        if unknown:
            raise ConfigurationError(
                f"unsupported JWT algorithms {unknown}; only asymmetric algorithms "
                f"{sorted(ALGORITHMS)} can be used"
            )
        if leeway < 0 or leeway > 300:
            raise ConfigurationError("leeway is between 0 and 300 seconds")
        self.issuer = issuer
        self.audiences = audiences
        self.clock: Clock = clock or SystemClock()
        self._algorithms: dict[str, Algorithm] = {name: ALGORITHMS[name] for name in algorithms}
        self._types = frozenset(_media_type(t) for t in token_types)
        self._leeway = leeway
        self._max_bytes = max_token_bytes
        self.subjects = SubjectMapping(
            directory,
            user_claim=user_claim,
            user_id=user_id,
            workspace_id=workspace_id,
            workspace_claim=workspace_claim,
            narrow_by_scope=narrow_by_scope,
        )
        self.jwks = JWKSCache(
            jwks_url,
            clock=self.clock,
            ttl=jwks_ttl,
            min_refresh_interval=jwks_min_refresh_interval,
            client=client,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"JWTAccessTokenResolver(issuer={self.issuer!r}, audience={list(self.audiences)}, "
            f"algorithms={list(self._algorithms)})"
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self._algorithms)

    async def aclose(self) -> None:
        """Close the HTTP client used for the JWKS."""
        await self.jwks.aclose()

    def accepts(self, token: str) -> bool:
        """Whether ``token`` looks like a JWT naming this issuer (unverified; for routing only).

        Several resolvers (one per issuer) can then share one guard.
        """
        parts = None if len(token) > self._max_bytes else compact_parts(token)
        if token.startswith("ag_") or parts is None:
            return False
        try:
            claims = loads_object(b64url_decode(parts[1], alphabet_checked=True))
        except JOSEError:
            return False
        return claims.get("iss") == self.issuer

    async def resolve(self, token: str) -> Principal:
        """The live Principal for ``token``, or :class:`InvalidToken` with the failed fact.

        Once the issuer's signature verifies, the token names someone: every later refusal
        carries its ``key_id`` (a hash, never the token), so it is audited as its own event
        rather than counted with the anonymous ones.
        """
        claims = await self.verify(token)
        key_id = token_key_id(token, claims.get("jti"))
        try:
            jkt = confirmation_jkt(claims)
            exp = _number(claims, "exp")
            expires_at = datetime.fromtimestamp(exp, timezone.utc) if exp is not None else None
            return await self.subjects.principal(
                claims, key_id=key_id, expires_at=expires_at, jkt=jkt
            )
        except InvalidToken as error:
            raise _named(error, key_id) from None

    async def verify(self, token: str) -> dict[str, Any]:
        """Check the signature and the registered claims; return the claims."""
        parts = None if len(token) > self._max_bytes else compact_parts(token)
        if parts is None:
            raise _malformed()
        header_b64, payload_b64, signature_b64 = parts
        try:
            header = loads_object(b64url_decode(header_b64, alphabet_checked=True))
            signature = b64url_decode(signature_b64, alphabet_checked=True)
        except JOSEError:
            raise _malformed() from None
        algorithm = self._check_header(header)
        kid = header.get("kid")
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not await self._verified(algorithm, kid, signing_input, signature):
            raise _refuse("the token's signature does not verify with the issuer's keys")
        try:
            claims = loads_object(b64url_decode(payload_b64, alphabet_checked=True))
        except JOSEError:
            raise _named(_malformed(), token_key_id(token)) from None
        try:
            self._check_claims(claims)
        except InvalidToken as error:  # signed by the issuer: it names someone
            raise _named(error, token_key_id(token, claims.get("jti"))) from None
        return claims

    def _check_header(self, header: Mapping[str, Any]) -> Algorithm:
        if not _FORBIDDEN_HEADER.isdisjoint(header):
            raise _malformed("the token's header carries a member this server refuses")
        alg = header.get("alg")
        algorithm = self._algorithms.get(alg) if isinstance(alg, str) else None
        if algorithm is None:
            raise _malformed("the token's alg is not in the server's allow-list")
        typ = header.get("typ")
        if not isinstance(typ, str) or _media_type(typ) not in self._types:
            raise _malformed("the token's typ is not at+jwt (RFC 9068)")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= 256):
            raise _malformed("the token's kid is malformed")
        return algorithm

    async def _verified(
        self, algorithm: Algorithm, kid: str | None, message: bytes, signature: bytes
    ) -> bool:
        for key in await self.jwks.keys(kid):
            if key.alg is not None and key.alg != algorithm.name:
                continue
            if algorithm.fits(key.jwk) and algorithm.verify(key.public, message, signature):
                return True
        return False

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise _refuse("the token was issued by another authorization server")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not any(
            isinstance(aud, str) and aud in self.audiences for aud in audiences
        ):
            raise _refuse("the token was issued for another resource (aud)")
        now = self.clock.now().timestamp()
        exp = _number(claims, "exp")
        if exp is None:
            raise _malformed("the token has no exp claim")
        if now >= exp + self._leeway:
            raise InvalidToken("the token has expired", reason=Reason.EXPIRED)
        nbf = _number(claims, "nbf")
        if nbf is not None and now + self._leeway < nbf:
            raise _refuse("the token is not valid yet (nbf)")
        iat = _number(claims, "iat")
        if iat is not None and now + self._leeway < iat:
            raise _refuse("the token was issued in the future (iat)")
        check_access_token_kind(claims)  # a refresh or ID token signed by the same issuer
