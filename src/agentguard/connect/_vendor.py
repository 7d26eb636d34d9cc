"""VendorClient: the gateway's OAuth 2.1 client at one vendor (code + PKCE, refresh, revocation).

One instance per service, shared by every user, so it keeps nothing of theirs: its HTTP client
never follows redirects (a code or refresh token must not travel to a host a response chose),
reads no proxy settings from the environment and keeps no cookies. Every answer is read with a
size cap and one overall deadline; every failure becomes :class:`VendorRefused` (the vendor said
no) or :class:`VendorUnavailable` (it could not say), and no message carries a token, a code,
the client secret or the vendor's body.
"""

from __future__ import annotations

import base64
import http.cookiejar
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import anyio

from agentguard._clock import Clock, SystemClock
from agentguard._redaction import install_log_redaction
from agentguard._secret import Secret
from agentguard.connect._discovery import (
    Endpoints,
    configured_endpoints,
    endpoints_from_metadata,
    well_known_url,
)
from agentguard.connect._errors import VendorRefused, VendorUnavailable
from agentguard.connect._settings import OAuthClientConfig
from agentguard.connect._token_response import parse_json_object, parse_token_response, refusal
from agentguard.connect._tokens import VendorTokens
from agentguard.errors import UsageError

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_RESPONSE_BYTES", "VendorClient"]

MAX_RESPONSE_BYTES = 64 * 1024
"""The most of a vendor's answer that is read; a longer one is a failure, not truncated."""

_STATE = re.compile(r"[\x20-\x7e]{1,2048}")  # RFC 6749 VSCHAR
_CODE = re.compile(r"[\x20-\x7e]{1,4096}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # RFC 7636 §4.2: BASE64URL(SHA-256), unpadded
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Accepts no cookie and returns none: one client serves every user."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _TooLarge(Exception):
    pass


class VendorClient:
    """The gateway's OAuth 2.1 client registration at one vendor, in use.

    Args:
        service: the service name, shown in errors.
        config: the client registration (endpoints or ``issuer`` for RFC 8414 discovery).
        client_secret: required unless ``config.client_auth`` is ``"none"``.
        transport: an httpx transport (tests: ``httpx.MockTransport``).
        timeout: seconds for each exchange with the vendor, whole (connect to last byte).
        clock: turns ``expires_in`` into ``expires_at``.

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
    ) -> None:
        if config.client_auth != "none" and client_secret is None:
            raise UsageError(
                f"{service}: client_auth {config.client_auth!r} needs the client secret"
            )
        if not timeout > 0:
            raise UsageError("timeout is a positive number of seconds")
        self.service = service
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._secret = client_secret if config.client_auth != "none" else None
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._endpoints = configured_endpoints(config)
        self._discovery = anyio.Lock()
        install_log_redaction()

    def __repr__(self) -> str:
        return f"VendorClient({self.service!r})"

    async def endpoints(self) -> Endpoints:
        """The vendor's endpoints: configured, or discovered once (a failure is not cached).

        Raises:
            VendorUnavailable: the metadata could not be fetched, or was refused.
        """
        if self._endpoints is not None:
            return self._endpoints
        async with self._discovery:
            if self._endpoints is None:  # another caller may have fetched it meanwhile
                self._endpoints = await self._discover()
            return self._endpoints

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
        headers = self._authenticate(form)
        status, body = await self._send("POST", endpoints.revocation, "revocation", form, headers)
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
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _token_request(self, form: dict[str, str], *, sent: Iterable[str]) -> VendorTokens:
        endpoints = await self.endpoints()
        headers = self._authenticate(form)
        status, body = await self._send("POST", endpoints.token, "token endpoint", form, headers)
        return parse_token_response(
            self.service,
            status,
            body,
            now=self.clock.now(),
            requested_scopes=self.config.scopes,
            sent=self._sent(sent),
        )

    def _sent(self, values: Iterable[str]) -> tuple[str, ...]:
        secret = () if self._secret is None else (self._secret.reveal(),)
        return (*values, *secret)

    def _authenticate(self, form: dict[str, str]) -> dict[str, str]:
        """Add the client authentication (RFC 6749 §2.3.1) to ``form``; the headers to send."""
        headers = {"Accept": "application/json"}
        client_id = self.config.client_id
        if self._secret is None:
            form["client_id"] = client_id
        elif self.config.client_auth == "client_secret_post":
            form["client_id"] = client_id
            form["client_secret"] = self._secret.reveal()
        else:  # client_secret_basic: each half form-urlencoded, then base64
            pair = f"{quote_plus(client_id)}:{quote_plus(self._secret.reveal())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return headers

    async def _discover(self) -> Endpoints:
        url = well_known_url(self.config.issuer or "")
        headers = {"Accept": "application/json"}
        status, body = await self._send("GET", url, "discovery metadata", None, headers)
        if status != 200:
            raise VendorUnavailable(
                self.service, f"{self.service}: the vendor's discovery metadata answered {status}"
            )
        return endpoints_from_metadata(self.service, self.config, parse_json_object(body))

    def _http(self) -> httpx.AsyncClient:
        import httpx  # lazily: `import agentguard.connect` needs no HTTP client

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
        return self._client

    async def _send(
        self,
        method: str,
        url: str,
        what: str,
        form: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> tuple[int, bytes]:
        """One exchange: the status and (for statuses below 500) the body, capped."""
        import httpx

        client = self._http()
        try:
            with anyio.fail_after(self._timeout):
                async with client.stream(method, url, data=form, headers=headers) as response:
                    if response.status_code >= 500:
                        return response.status_code, b""
                    return response.status_code, await _read_capped(response)
        except _TooLarge:
            reason = f"answered more than {MAX_RESPONSE_BYTES} bytes"
        except (TimeoutError, httpx.TimeoutException):
            reason = "timed out"
        except httpx.HTTPError as error:
            reason = f"could not be reached ({type(error).__name__})"
        raise VendorUnavailable(self.service, f"{self.service}: the vendor's {what} {reason}")


async def _read_capped(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise _TooLarge
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise _TooLarge
    return bytes(body)


def _check_redirect_uri(redirect_uri: str) -> None:
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise UsageError("redirect_uri is an absolute http(s) URL without a fragment")
