"""VendorClient: the gateway's OAuth 2.1 client at one vendor (code + PKCE, refresh, revocation).

One instance per service, shared by every user, so it keeps nothing of theirs: its HTTP
exchanges (:mod:`agentguard.connect._vendor_exchange`) follow no redirect, read no proxy settings
from the environment, keep no cookies, and read every answer with a size cap and one overall
deadline. Every failure becomes :class:`VendorRefused` (the vendor said no) or
:class:`VendorUnavailable` (it could not say), and no message carries a token, a code, the
client secret or the vendor's body.

Discovered metadata is kept for ``discovery_ttl`` (an hour by default) and fetched again lazily
by the next call after that; a failed fetch is an error for that call (nothing stale is served)
and is not remembered, so the call after it tries again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import anyio

from agentguard._clock import Clock, SystemClock
from agentguard._redaction import install_log_redaction
from agentguard._secret import Secret
from agentguard.connect._discovery import (
    Endpoints,
    allowed_hosts,
    configured_endpoints,
    endpoints_from_metadata,
    issuer_fault,
    well_known_url,
)
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.connect._settings import OAuthClientConfig
from agentguard.connect._token_response import (
    INVALID_RESPONSE,
    parse_json_object,
    parse_token_response,
    refusal,
)
from agentguard.connect._tokens import VendorTokens
from agentguard.connect._vendor_exchange import (
    MAX_RESPONSE_BYTES,
    VendorExchange,
    authenticate,
    parse_retry_after,
    with_retry_after,
)
from agentguard.errors import UsageError

if TYPE_CHECKING:
    import httpx

__all__ = ["DISCOVERY_TTL", "MAX_RESPONSE_BYTES", "VendorClient", "parse_retry_after"]

DISCOVERY_TTL = 3600.0
"""Seconds discovered metadata is used before it is fetched again."""

_STATE = re.compile(r"[\x20-\x7e]{1,2048}")  # RFC 6749 VSCHAR
_CODE = re.compile(r"[\x20-\x7e]{1,4096}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # RFC 7636 §4.2: BASE64URL(SHA-256), unpadded
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1


class VendorClient:
    """The gateway's OAuth 2.1 client registration at one vendor, in use.

    Args:
        service: the service name, shown in errors.
        config: the client registration (endpoints or ``issuer`` for RFC 8414 discovery).
        client_secret: required unless ``config.client_auth`` is ``"none"``.
        transport: an httpx transport (tests: ``httpx.MockTransport``).
        timeout: seconds for each exchange with the vendor, whole (connect to last byte).
        clock: turns ``expires_in`` into ``expires_at``; ages discovered metadata.
        discovery_ttl: seconds discovered metadata is used before it is fetched again.

    Example::

        vendor = VendorClient("crm", config, client_secret=Secret(secret))
        url = await vendor.authorization_url(
            redirect_uri=callback, state=state, code_challenge=challenge
        )
        tokens = await vendor.exchange_code(code, redirect_uri=callback, code_verifier=verifier)
    """

    def __init__(
        self,
        service: str,
        config: OAuthClientConfig,
        *,
        client_secret: Secret | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        clock: Clock | None = None,
        discovery_ttl: float = DISCOVERY_TTL,
    ) -> None:
        if config.client_auth != "none" and client_secret is None:
            raise UsageError(
                f"{service}: client_auth {config.client_auth!r} needs the client secret"
            )
        if not timeout > 0:
            raise UsageError("timeout is a positive number of seconds")
        if not discovery_ttl > 0:
            raise UsageError("discovery_ttl is a positive number of seconds")
        configured = configured_endpoints(config)
        if configured is None:
            try:
                allowed_hosts(config)
            except ValueError as error:
                raise UsageError(f"{service}: {error}") from None
        self.service = service
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._secret = client_secret if config.client_auth != "none" else None
        self._exchange = VendorExchange(
            service, transport=transport, timeout=timeout, now=self._now
        )
        self._configured = configured
        self._discovered: tuple[Endpoints, datetime] | None = None
        self._discovery_ttl = timedelta(seconds=discovery_ttl)
        self._discovery = anyio.Lock()
        install_log_redaction()

    def __repr__(self) -> str:
        return f"VendorClient({self.service!r})"

    @property
    def timeout(self) -> float:
        """Seconds for each exchange with the vendor, whole (connect to last byte)."""
        return self._exchange.timeout

    @property
    def client_secret(self) -> Secret | None:
        """The client secret this client authenticates with (``None`` for a public client):
        the proxy withholds a vendor response that shows it."""
        return self._secret

    async def endpoints(self) -> Endpoints:
        """The vendor's endpoints: configured, or discovered (kept ``discovery_ttl`` seconds;
        concurrent callers share one fetch; a failure is not kept).

        Raises:
            VendorUnavailable: the metadata could not be fetched, or was refused.
        """
        if self._configured is not None:
            return self._configured
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._discovery:
            fresh = self._fresh()  # another caller may have fetched it meanwhile
            if fresh is None:
                self._discovered = None
                fresh = await self._discover()
                self._discovered = (fresh, self.clock.now())
            return fresh

    async def expected_issuer(self) -> tuple[str | None, bool]:
        """What an authorization response's ``iss`` must be (RFC 9207), and whether it must
        be there at all.

        Returns:
            ``(issuer, required)``: ``issuer`` is the configured ``issuer`` (with discovery, the
            metadata's, which equals it exactly), ``None`` when none is configured (nothing to
            compare with); ``required`` is whether the metadata says
            ``authorization_response_iss_parameter_supported`` (always ``False`` with
            configured endpoints: no metadata is read).

        Raises:
            VendorUnavailable: the metadata could not be fetched, or was refused.
        """
        endpoints = await self.endpoints()
        return endpoints.issuer, endpoints.iss_parameter_supported

    async def check_issuer(self, iss: str | None) -> None:
        """Check the ``iss`` of an authorization response (RFC 9207 §2.4, the mix-up defence):
        it must equal the expected issuer exactly, and may be absent only when the metadata
        does not promise it. With no issuer configured, any ``iss`` is ignored.

        Raises:
            VendorRefused: ``invalid_response``: another issuer, or a missing promised ``iss``.
            VendorUnavailable: the metadata could not be fetched, or was refused.
        """
        issuer, required = await self.expected_issuer()
        wrong = issuer_fault(iss, issuer, required=required)
        if wrong is not None:
            raise VendorRefused(
                self.service,
                INVALID_RESPONSE,
                f"{self.service}: the authorization response {wrong} (RFC 9207)",
            )

    async def authorization_url(self, *, redirect_uri: str, state: str, code_challenge: str) -> str:
        """The vendor's authorization URL to send the user's browser to (RFC 6749 §4.1.1).

        Any query already on the endpoint is kept, except a parameter the flow sets itself.
        """
        _check_redirect_uri(redirect_uri)
        if _STATE.fullmatch(state) is None:
            raise UsageError("state is 1 to 2048 printable ASCII characters")
        if _CHALLENGE.fullmatch(code_challenge) is None:
            raise UsageError("code_challenge is an unpadded base64url SHA-256 (43 characters)")
        endpoints = await self.endpoints()
        ours = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if self.config.scopes:
            ours["scope"] = " ".join(self.config.scopes)
        ours.update(self.config.authorize_params)
        parts = urlsplit(endpoints.authorization)
        kept = [
            (name, value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
            if name not in ours
        ]
        query = urlencode([*kept, *ours.items()], quote_via=quote)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str
    ) -> VendorTokens:
        """Redeem an authorization code with its PKCE verifier (RFC 6749 §4.1.3, RFC 7636).

        Raises:
            VendorRefused: the vendor refused (``invalid_grant``: wrong, used or expired code,
                or PKCE mismatch), or answered unusably; a malformed ``code`` is refused
                ``invalid_request`` without being sent.
            VendorUnavailable: unreachable, timed out, 5xx.
        """
        _check_redirect_uri(redirect_uri)
        if _VERIFIER.fullmatch(code_verifier) is None:
            raise UsageError("code_verifier is 43 to 128 RFC 7636 characters")
        if not isinstance(code, str) or _CODE.fullmatch(code) is None:
            raise VendorRefused(
                self.service,
                "invalid_request",
                f"{self.service}: the authorization code is malformed; it was not sent",
            )
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        return await self._token_request(form, sent=(code, code_verifier))

    async def refresh(self, refresh_token: Secret) -> VendorTokens:
        """Renew the access token (RFC 6749 §6). ``refresh_token`` is ``None`` in the result
        when the vendor did not rotate it: keep the one you have.

        Raises:
            VendorRefused: ``.permanent`` (``invalid_grant``) when the grant is dead.
            VendorUnavailable: unreachable, timed out, 5xx.
        """
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        return await self._token_request(form, sent=(refresh_token.reveal(),))

    async def revoke(
        self,
        token: Secret,
        *,
        token_type_hint: str = "refresh_token",  # noqa: S107 - a token kind, not a secret
    ) -> bool:
        """Revoke ``token`` at the vendor (RFC 7009); ``False`` when it offers no endpoint.

        Raises:
            VendorRefused: the vendor refused the request.
            VendorUnavailable: unreachable, timed out, 5xx (RFC 7009 §2.2.1: 503).
        """
        if token_type_hint not in ("refresh_token", "access_token"):
            raise UsageError("token_type_hint is 'refresh_token' or 'access_token'")
        endpoints = await self.endpoints()
        if endpoints.revocation is None:
            return False
        form = {"token": token.reveal(), "token_type_hint": token_type_hint}
        headers = authenticate(form, self.config, self._secret)
        status, body, _ = await self._exchange.send(
            "POST", endpoints.revocation, "revocation", form, headers
        )
        if 200 <= status < 300:
            return True
        raise refusal(
            self.service,
            status,
            body,
            sent=self._sent((token.reveal(),)),
            endpoint="revocation endpoint",
        )

    async def aclose(self) -> None:
        """Close the HTTP client; a later call opens a new one."""
        await self._exchange.aclose()

    async def _token_request(self, form: dict[str, str], *, sent: Iterable[str]) -> VendorTokens:
        endpoints = await self.endpoints()
        headers = authenticate(form, self.config, self._secret)
        status, body, retry_after = await self._exchange.send(
            "POST", endpoints.token, "token endpoint", form, headers
        )
        try:
            return parse_token_response(
                self.service,
                status,
                body,
                now=self.clock.now(),
                requested_scopes=self.config.scopes,
                sent=self._sent(sent),
            )
        except VendorUnavailable as down:
            raise with_retry_after(down, retry_after) from None

    def _sent(self, values: Iterable[str]) -> tuple[str, ...]:
        secret = () if self._secret is None else (self._secret.reveal(),)
        return (*values, *secret)

    def _now(self) -> datetime:
        return self.clock.now()

    def _fresh(self) -> Endpoints | None:
        if self._discovered is None:
            return None
        endpoints, fetched = self._discovered
        age = self.clock.now() - fetched
        return endpoints if timedelta(0) <= age < self._discovery_ttl else None

    async def _discover(self) -> Endpoints:
        url = well_known_url(self.config.issuer or "")
        headers = {"Accept": "application/json"}
        status, body, retry_after = await self._exchange.send(
            "GET", url, "discovery metadata", None, headers
        )
        if status != 200:
            down = VendorUnavailable(
                self.service, f"{self.service}: the vendor's discovery metadata answered {status}"
            )
            raise with_retry_after(down, retry_after)
        return endpoints_from_metadata(self.service, self.config, parse_json_object(body))


def _check_redirect_uri(redirect_uri: str) -> None:
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise UsageError("redirect_uri is an absolute http(s) URL without a fragment")
