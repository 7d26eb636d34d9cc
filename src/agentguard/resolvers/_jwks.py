"""An issuer's JSON Web Key Set: fetched over HTTP(S), cached, refetched when keys rotate.

Keys are cached for ``ttl`` seconds (by the injected clock's monotonic time). A token whose
``kid`` is not in the cached set triggers one refetch (the issuer may have rotated), but at most
once per ``min_refresh_interval``: a flood of tokens with random ``kid`` values costs the issuer
one request per interval, not one per token. Concurrent refetches are collapsed into one.
A failed fetch refuses requests with 503 (fail closed) and is itself rate-limited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import httpx
from cachetools import TTLCache

from agentguard._clock import Clock
from agentguard._httpclient import LazyClient
from agentguard.dpop._jose import JOSEError, loads_object
from agentguard.dpop._jwk import JWKError, ParsedJWK, PublicKey, load_public_key, parse_jwk
from agentguard.errors import ServiceUnavailable, UsageError

__all__ = ["JWKSCache", "SigningKey"]

logger = logging.getLogger("agentguard.resolvers")

_MAX_KID = 256


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One public signing key of the issuer: its ``kid``, optional ``alg`` and loaded key."""

    kid: str | None
    alg: str | None
    jwk: ParsedJWK
    public: PublicKey


class JWKSUnavailable(ServiceUnavailable):
    """The issuer's keys could not be fetched; no token of it can be checked (503)."""

    def __init__(self) -> None:
        super().__init__("the authorization server's signing keys could not be fetched")


def parse_jwks(raw: bytes) -> list[SigningKey]:
    """The usable public signing keys of a JWKS document.

    Keys meant for encryption (``use`` other than ``sig``), symmetric or private keys, unknown
    key types and malformed keys are skipped: the issuer's set may contain keys we never use.
    """
    document = loads_object(raw)
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JOSEError("a JWKS is an object with a 'keys' array")
    keys: list[SigningKey] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        ops = entry.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        kid = entry.get("kid")
        alg = entry.get("alg")
        if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID):
            continue
        if alg is not None and not isinstance(alg, str):
            continue
        try:
            parsed = parse_jwk(entry)
            public = load_public_key(parsed)
        except JWKError:
            continue
        keys.append(SigningKey(kid, alg, parsed, public))
    return keys


class JWKSCache:
    """The cached key set of one issuer.

    Args:
        url: the issuer's ``jwks_uri``.
        clock: monotonic time for the cache and the refetch limit.
        ttl: seconds a fetched set is used before it is fetched again.
        min_refresh_interval: least seconds between two fetches caused by unknown ``kid``
            values or by failures.
        max_bytes: largest JWKS document accepted.
        timeout: seconds for each fetch.
        client: an ``httpx.AsyncClient`` to fetch with (tests, shared pools); by default one is
            created on first use, without redirects or proxy settings from the environment.
        transport: an ``httpx`` transport for the created client.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        ttl: float = 600.0,
        min_refresh_interval: float = 30.0,
        max_bytes: int = 256 * 1024,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise UsageError("the JWKS URL must be http(s)")
        self.url = url
        self._clock = clock
        self._min_interval = min_refresh_interval
        self._max_bytes = max_bytes
        self._http = LazyClient(client, timeout=timeout, transport=transport)
        self._cache: TTLCache[str, list[SigningKey]] = TTLCache(
            maxsize=1, ttl=ttl, timer=clock.monotonic
        )
        self._lock = anyio.Lock()
        self._last_fetch: float | None = None
        self._generation = 0
        self.fetches = 0

    def __repr__(self) -> str:
        return f"JWKSCache(url={self.url!r}, fetches={self.fetches})"

    @property
    def client(self) -> httpx.AsyncClient:
        return self._http.client

    async def aclose(self) -> None:
        """Close the client this cache created."""
        await self._http.aclose()

    def _may_fetch(self) -> bool:
        last = self._last_fetch
        return last is None or self._clock.monotonic() - last >= self._min_interval

    async def keys(self, kid: str | None) -> list[SigningKey]:
        """The keys a token with ``kid`` may be signed by (every key when ``kid`` is ``None``).

        Fetches when the cached set expired, and once more (rate-limited) when ``kid`` is
        unknown. Raises :class:`~agentguard.errors.ServiceUnavailable` when there is no set.
        """
        cached = self._cache.get("keys")
        if cached is None:
            cached = await self._refresh(self._generation, expired=True)
        found = [key for key in cached if kid is None or key.kid == kid]
        if found or kid is None or not self._may_fetch():
            return found
        cached = await self._refresh(self._generation, expired=False)
        return [key for key in cached if key.kid == kid]

    async def _refresh(self, seen: int, *, expired: bool) -> list[SigningKey]:
        async with self._lock:
            cached = self._cache.get("keys")
            if self._generation != seen and cached is not None:
                return cached  # another task fetched while we waited
            if not self._may_fetch():
                if cached is not None:
                    return cached
                if not expired or self._last_fetch is not None:
                    raise JWKSUnavailable()
            self._last_fetch = self._clock.monotonic()
            self.fetches += 1
            try:
                keys = parse_jwks(await self._download())
            except (httpx.HTTPError, JOSEError, _TooLarge, _BadStatus) as failure:
                logger.warning("fetching the JWKS failed: %s", type(failure).__name__)
                raise JWKSUnavailable() from None
            self._cache["keys"] = keys
            self._generation += 1
            return keys

    async def _download(self) -> bytes:
        headers = {"accept": "application/jwk-set+json, application/json"}
        async with self.client.stream("GET", self.url, headers=headers) as response:
            if response.status_code != 200:
                raise _BadStatus
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise _TooLarge
                chunks.append(chunk)
        return b"".join(chunks)


class _TooLarge(Exception):
    pass


class _BadStatus(Exception):
    pass
