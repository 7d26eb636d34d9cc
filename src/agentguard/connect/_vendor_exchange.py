"""One HTTP exchange with a vendor: how the gateway's OAuth client sends and reads.

The HTTP client is shared by every user of a service, so it keeps nothing of theirs: it never
follows redirects (a code or refresh token must not travel to a host a response chose), reads no
proxy settings from the environment and keeps no cookies. Every answer is read with a size cap
(:data:`MAX_RESPONSE_BYTES`, a longer one is a failure, not truncated) and one overall deadline;
a failure to get an answer becomes :class:`~agentguard.connect.VendorUnavailable`, whose
message names the endpoint and the kind of failure, never a token or the vendor's body. The
client authenticates as RFC 6749 §2.3.1 says, and a vendor's ``Retry-After`` is read as seconds.
"""

from __future__ import annotations

import base64
import http.cookiejar
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import anyio

from agentguard._secret import Secret
from agentguard.connect._errors import VendorUnavailable
from agentguard.connect._settings import OAuthClientConfig

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_RESPONSE_BYTES",
    "VendorExchange",
    "authenticate",
    "parse_retry_after",
    "with_retry_after",
]

MAX_RESPONSE_BYTES = 64 * 1024
"""The most of a vendor's answer that is read; a longer one is a failure, not truncated."""

_DELAY = re.compile(r"[0-9]{1,9}")  # RFC 9110 delay-seconds


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Accepts no cookie and returns none: one client serves every user."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _TooLarge(Exception):
    pass


class VendorExchange:
    """The HTTP client of one service's vendor, opened lazily and shared by every user.

    Args:
        service: the service name, shown in errors.
        transport: an httpx transport (tests: ``httpx.MockTransport``).
        timeout: seconds for each exchange with the vendor, whole (connect to last byte).
        now: the current time, for an HTTP-date ``Retry-After``.
    """

    def __init__(
        self,
        service: str,
        *,
        transport: httpx.AsyncBaseTransport | None,
        timeout: float,
        now: Callable[[], datetime],
    ) -> None:
        self.service = service
        self.timeout = timeout
        self._transport = transport
        self._now = now
        self._client: httpx.AsyncClient | None = None

    async def send(
        self,
        method: str,
        url: str,
        what: str,
        form: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> tuple[int, bytes, float | None]:
        """One exchange: the status, (for statuses below 500) the body, capped, and the
        answer's ``Retry-After`` in seconds (``None`` when absent or unreadable).

        Raises:
            VendorUnavailable: the vendor's ``what`` could not be reached, timed out, or
                answered more than :data:`MAX_RESPONSE_BYTES`.
        """
        import httpx

        client = self._http()
        try:
            with anyio.fail_after(self.timeout):
                async with client.stream(method, url, data=form, headers=headers) as response:
                    status = response.status_code
                    later = parse_retry_after(response.headers.get("retry-after"), self._now())
                    if status >= 500:
                        return status, b"", later
                    return status, await _read_capped(response), later
        except _TooLarge:
            reason = f"answered more than {MAX_RESPONSE_BYTES} bytes"
        except (TimeoutError, httpx.TimeoutException):
            reason = "timed out"
        except httpx.HTTPError as error:
            reason = f"could not be reached ({type(error).__name__})"
        raise VendorUnavailable(self.service, f"{self.service}: the vendor's {what} {reason}")

    async def aclose(self) -> None:
        """Close the HTTP client; a later exchange opens a new one."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        import httpx  # lazily: `import agentguard.connect` needs no HTTP client

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
        return self._client


def authenticate(
    form: dict[str, str], config: OAuthClientConfig, secret: Secret | None
) -> dict[str, str]:
    """Add the client authentication (RFC 6749 §2.3.1) to ``form``; the headers to send."""
    headers = {"Accept": "application/json"}
    client_id = config.client_id
    if secret is None:
        form["client_id"] = client_id
    elif config.client_auth == "client_secret_post":
        form["client_id"] = client_id
        form["client_secret"] = secret.reveal()
    else:  # client_secret_basic: each half form-urlencoded, then base64
        pair = f"{quote_plus(client_id)}:{quote_plus(secret.reveal())}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return headers


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """An HTTP ``Retry-After`` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) as seconds
    from ``now`` (0 for a date in the past); ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110's dates are GMT; "-0000" parses naive
        when = when.replace(tzinfo=timezone.utc)
    return max((when - now).total_seconds(), 0.0)


def with_retry_after(down: VendorUnavailable, seconds: float | None) -> VendorUnavailable:
    """``down`` carrying the vendor's ``Retry-After``, when it sent one."""
    if seconds is None:
        return down
    return VendorUnavailable(down.service, str(down), retry_after=seconds)


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
