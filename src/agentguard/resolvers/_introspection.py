"""IntrospectionResolver: opaque access tokens checked at the issuer (RFC 7662).

The token is posted to the authorization server's introspection endpoint, authenticated as
this resource server. An ``active`` answer says who the token belongs to; the user's grants,
account and membership are then read live from the user store, as for every credential.

Answers are cached briefly, keyed by SHA-256 of the token (the token itself is never kept), and
never beyond the token's own ``exp``: revocation at the issuer is seen within ``cache_ttl``
seconds. Inactive answers are not cached. An endpoint that fails refuses with 503.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final

import httpx
from cachetools import TTLCache

from agentguard._clock import Clock, SystemClock
from agentguard._httpclient import LazyClient
from agentguard._model import Principal
from agentguard._request import TOKEN68
from agentguard.dpop._jose import JOSEError, loads_object
from agentguard.errors import ConfigurationError, InvalidToken, Reason, ServiceUnavailable
from agentguard.resolvers._claims import (
    SubjectMapping,
    check_access_token_kind,
    confirmation_jkt,
    numeric_date,
    token_key_id,
)
from agentguard.storage._protocols import DirectoryStore

__all__ = ["ANY_AUDIENCE", "IntrospectionResolver"]

logger = logging.getLogger("agentguard.resolvers")


class IntrospectionUnavailable(ServiceUnavailable):
    """The introspection endpoint failed; the token cannot be checked (503)."""

    def __init__(self) -> None:
        super().__init__("the authorization server's introspection endpoint failed")


def _inactive() -> InvalidToken:
    return InvalidToken("the token is not active at its authorization server")


def _timestamp(response: Mapping[str, Any], name: str) -> float | None:
    return numeric_date(response, name, source="introspection answer")


class _AnyAudience:
    """The type of :data:`ANY_AUDIENCE`."""

    def __repr__(self) -> str:
        return "ANY_AUDIENCE"


ANY_AUDIENCE: Final = _AnyAudience()
"""Pass as ``audience`` to accept a token issued for any resource (not recommended).

Only for an authorization server that issues tokens to this one resource and omits ``aud``.
"""


class IntrospectionResolver:
    """Resolves opaque tokens through an RFC 7662 introspection endpoint.

    Args:
        endpoint: the introspection URL.
        directory: the user store the subject is looked up in, live.
        client_id / client_secret: this resource server's credentials at the endpoint (HTTP
            Basic, RFC 7662 §2.1); or pass ``auth``.
        auth: any ``httpx.Auth`` for the endpoint instead.
        audience: required: this resource's identifier(s) (RFC 8707); an answer's ``aud`` must
            contain one of them. :data:`ANY_AUDIENCE` is the explicit opt-out, for a server
            that issues tokens to this resource only and omits ``aud``.
        issuer: when given, an answer's ``iss`` must equal it (an answer without ``iss`` is
            refused).
        require_token_type: refuse an answer without ``token_type`` (the default), since RFC
            7662 lets a server omit it for a refresh token too; ``False`` for servers that never
            send it. Whenever ``token_type``, ``typ`` or ``token_use`` is present it must name an
            access token (:data:`~agentguard.resolvers._claims.ACCESS_TOKEN_KINDS`): refresh,
            offline and ID tokens are refused either way.
        accepts: which tokens this resolver handles (default: any token68 string that is not an
            agentguard key); narrow it when several resolvers share a guard.
        cache_ttl: seconds an active answer is reused (bounded by the token's ``exp``).
        cache_size: most answers kept.
        clock / user_claim / user_id / workspace_id / workspace_claim / narrow_by_scope: as for
            :class:`~agentguard.resolvers.JWTAccessTokenResolver`.
        timeout / client / transport: the HTTP client (created on first use by default).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        directory: DirectoryStore,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth: httpx.Auth | None = None,
        audience: str | Sequence[str] | _AnyAudience,
        issuer: str | None = None,
        require_token_type: bool = True,
        accepts: Callable[[str], bool] | None = None,
        cache_ttl: float = 30.0,
        cache_size: int = 10_000,
        clock: Clock | None = None,
        user_claim: str = "sub",
        user_id: Callable[[str], str | None] | None = None,
        workspace_id: str | None = None,
        workspace_claim: str = "workspace",
        narrow_by_scope: bool = True,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoint.startswith(("https://", "http://")):
            raise ConfigurationError("the introspection endpoint must be an http(s) URL")
        if auth is None and client_id is not None and client_secret is not None:
            auth = httpx.BasicAuth(client_id, client_secret)
        if auth is None:
            raise ConfigurationError(
                "introspection needs client credentials (client_id/client_secret or auth=...)"
            )
        if cache_ttl < 0:
            raise ConfigurationError("cache_ttl cannot be negative")
        self.endpoint = endpoint
        self.issuer = issuer
        if isinstance(audience, _AnyAudience):
            self.audiences: tuple[str, ...] = ()
        else:
            self.audiences = (audience,) if isinstance(audience, str) else tuple(audience)
            if not self.audiences or not all(self.audiences):
                raise ConfigurationError(
                    "audience is required: this resource's identifier (RFC 8707), or "
                    "ANY_AUDIENCE to accept tokens issued for any resource"
                )
        self.require_token_type = require_token_type
        self.clock: Clock = clock or SystemClock()
        self._auth = auth
        self._accepts = accepts
        self._http = LazyClient(client, timeout=timeout, transport=transport)
        self._cache: TTLCache[bytes, dict[str, Any]] = TTLCache(
            maxsize=cache_size, ttl=max(cache_ttl, 1e-9), timer=self.clock.monotonic
        )
        self._cache_enabled = cache_ttl > 0
        self.subjects = SubjectMapping(
            directory,
            user_claim=user_claim,
            user_id=user_id,
            workspace_id=workspace_id,
            workspace_claim=workspace_claim,
            narrow_by_scope=narrow_by_scope,
        )
        self.requests = 0

    def __repr__(self) -> str:
        return f"IntrospectionResolver(endpoint={self.endpoint!r}, issuer={self.issuer!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        return self._http.client

    async def aclose(self) -> None:
        """Close the HTTP client this resolver created."""
        await self._http.aclose()

    def accepts(self, token: str) -> bool:
        if token.startswith("ag_") or len(token) > 8192 or not TOKEN68.match(token):
            return False
        return self._accepts(token) if self._accepts is not None else True

    async def resolve(self, token: str) -> Principal:
        """The live Principal for ``token``, or :class:`InvalidToken` when it is not active."""
        if len(token) > 8192 or not TOKEN68.match(token):
            raise InvalidToken("the token is malformed", reason=Reason.MALFORMED_KEY)
        answer = await self.introspect(token)
        key_id = token_key_id(token, answer.get("jti"))
        try:  # the server says it is active: it names someone, so refusals carry its id
            exp = _timestamp(answer, "exp")
            return await self.subjects.principal(
                answer,
                key_id=key_id,
                expires_at=datetime.fromtimestamp(exp, timezone.utc) if exp is not None else None,
                jkt=confirmation_jkt(answer),
            )
        except InvalidToken as error:
            if error.audit_context.get("key_id"):
                raise
            raise error.with_context(key_id=key_id) from None

    async def introspect(self, token: str) -> dict[str, Any]:
        """The checked introspection answer for an active token (cached briefly)."""
        digest = hashlib.sha256(token.encode("ascii")).digest()
        now = self.clock.now().timestamp()
        cached = self._cache.get(digest)
        if cached is not None:
            exp = _timestamp(cached, "exp")
            if exp is None or now < exp:
                return cached
            self._cache.pop(digest, None)
        answer = await self._post(token)
        self._check(answer, now)
        if self._cache_enabled:
            self._cache[digest] = answer
        return answer

    def _check(self, answer: Mapping[str, Any], now: float) -> None:
        if answer.get("active") is not True:
            raise _inactive()
        self._check_type(answer)
        exp = _timestamp(answer, "exp")
        if exp is not None and now >= exp:
            raise InvalidToken("the token has expired", reason=Reason.EXPIRED)
        nbf = _timestamp(answer, "nbf")
        if nbf is not None and now < nbf:
            raise _inactive()
        _timestamp(answer, "iat")  # informational, but bounded like the others
        if self.issuer is not None and answer.get("iss") != self.issuer:
            raise InvalidToken("the token was issued by another authorization server")
        if self.audiences:
            aud = answer.get("aud")
            auds = [aud] if isinstance(aud, str) else aud
            if not isinstance(auds, list) or not any(a in self.audiences for a in auds):
                raise InvalidToken("the token was issued for another resource (aud)")

    def _check_type(self, answer: Mapping[str, Any]) -> None:
        check_access_token_kind(answer, required="token_type" if self.require_token_type else None)

    async def _post(self, token: str) -> dict[str, Any]:
        self.requests += 1
        try:
            response = await self.client.post(
                self.endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"accept": "application/json"},
                auth=self._auth,
            )
        except httpx.HTTPError as failure:
            logger.warning("token introspection failed: %s", type(failure).__name__)
            raise IntrospectionUnavailable() from None
        if response.status_code != 200 or len(response.content) > 64 * 1024:
            logger.warning("token introspection answered %d", response.status_code)
            raise IntrospectionUnavailable()
        try:
            return loads_object(response.content)
        except JOSEError:
            raise IntrospectionUnavailable() from None
