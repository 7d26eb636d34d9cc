"""LazyClient: the one way agentguard holds an outbound ``httpx.AsyncClient``; and the proxy's
faster transport.

The client is created on first use, inside the running event loop (an ASGI app is often built
before any loop exists), never follows redirects (a credential must not travel to a host the
request chose), never reads proxy settings from the environment, never keeps cookies (one pooled
client serves every user: a cookie one user's upstream set must not travel with another user's
request), and is closed only when agentguard created it (a client passed in belongs to the
caller).

:class:`AiohttpTransport` puts aiohttp's connection pool and HTTP/1.1 parser under the httpx
API. The proxy uses it when aiohttp is installed (:func:`proxy_transport`): on the gateway's
benchmark the outbound hop costs about a quarter of the CPU of httpx's own transport, whose
pool re-checks every idle connection's socket on every request (see ``docs/performance.md``).
Everything above the transport (``httpx.Request``/``httpx.Response``, decoding, timeouts as
``httpx`` exceptions) is unchanged.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import importlib.util
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport", "LazyClient", "proxy_transport"]

# The aiohttp parser's limits, raised to about what httpx (h11, 100 KiB header block) accepts.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
_MAX_LINE = 64 * 1024
_MAX_HEADERS = 256
_CHUNK = 64 * 1024
_LARGE = 1024 * 1024


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Accepts no cookie and returns none: the pooled client is shared by every user."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def _cookieless_jar() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=_NoCookies())


class LazyClient:
    """Holds a caller's client, or creates and owns one with these settings."""

    __slots__ = ("_client", "_limits", "_owns", "_timeout", "_transport")

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        timeout: httpx.Timeout | float = 10.0,
        limits: httpx.Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = client
        self._owns = client is None
        self._timeout = timeout
        self._limits = limits
        self._transport = transport

    @property
    def client(self) -> httpx.AsyncClient:
        """The client (created now if it does not exist yet)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits or httpx.Limits(),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
                cookies=_cookieless_jar(),
            )
        return self._client

    async def send(self, request: httpx.Request) -> httpx.Response:
        """``client.send(request, stream=True)``; straight to the transport when it is an
        :class:`AiohttpTransport` of a client agentguard created (no auth, redirects, hooks or
        cookie jar for the client's layers to apply), which saves those layers on every call."""
        client = self.client
        if not (self._owns and isinstance(self._transport, AiohttpTransport)):
            return await client.send(request, stream=True)
        response = await self._transport.handle_async_request(request)
        response.request = request
        response.default_encoding = "utf-8"
        return response

    async def aclose(self) -> None:
        """Close the client if agentguard created it; a later use creates a fresh one."""
        if self._owns and self._client is not None:
            await self._client.aclose()
            self._client = None


def proxy_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport | None:
    """An :class:`AiohttpTransport` when aiohttp is installed, else ``None`` (httpx's own)."""
    if importlib.util.find_spec("aiohttp") is None:
        return None
    return AiohttpTransport(limits=limits)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport on an ``aiohttp`` session (HTTP/1.1, created on first use).

    What it keeps from httpx's transport: the request goes out with exactly the method, target
    bytes and header fields of the ``httpx.Request`` (aiohttp adds none of its own and does not
    re-quote the URL); the response body arrives undecoded, so httpx decodes it as before; no
    redirects, no cookies, no proxy settings from the environment; failures are ``httpx``
    exceptions (:class:`httpx.TimeoutException` for every deadline, ``RemoteProtocolError`` for
    a malformed or truncated response, ``ConnectError`` when the upstream cannot be reached).

    Differences: the ``write`` deadline is not enforced separately (a request body is written
    under the ``read`` deadline of the exchange); an idempotent request whose reused keep-alive
    connection turns out to be closed is retried once on a fresh connection (aiohttp's rule; a
    streamed body that was consumed is not).

    Args:
        limits: ``max_connections`` (``None`` for no bound) and ``keepalive_expiry``.
        ssl_context: for ``https`` upstreams; by default the same as httpx's transport uses.
    """

    def __init__(
        self, *, limits: httpx.Limits | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._limits = limits or httpx.Limits()
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._limits.max_connections})"

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
            ssl=self._ssl or httpx.create_ssl_context(trust_env=False),  # httpx's own trust
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            requote_redirect_url=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=_MAX_LINE,
            max_field_size=_MAX_LINE,
            max_headers=_MAX_HEADERS,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp
        from multidict import CIMultiDict
        from yarl import URL

        if self._session is None:
            self._session = self._open()
        deadlines = request.extensions.get("timeout", {})
        connect, pool = deadlines.get("connect"), deadlines.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=deadlines.get("read"),
        )
        for name, _ in request.headers.raw:  # h11 refuses these; aiohttp would send them
            if not _TOKEN.fullmatch(name):
                raise httpx.LocalProtocolError("a request header name is not an RFC 9110 token")
        headers = CIMultiDict(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        )
        body: bytes | AsyncIterator[bytes] | None
        upload = None
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            upload = _Upload(request.stream, _declared_length(request))
            body = upload.chunks()
            headers.popall("Transfer-Encoding", None)  # aiohttp frames the stream itself
        if isinstance(body, bytes) and len(body) > _LARGE:  # aiohttp warns on large bytes
            upload = _Upload(_one(body))
            body = upload.chunks()  # sent with httpx's Content-Length
        try:
            with _mapped(request):
                answer = await self._session.request(
                    request.method,
                    URL(str(request.url), encoded=True),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=timeout,
                    compress=False,
                )
        except httpx.TransportError:
            if upload is not None and upload.failure is not None:
                raise upload.failure from None  # the body's own error (408, 400, client gone)
            raise
        return httpx.Response(
            status_code=answer.status,
            headers=answer.raw_headers,
            stream=_ResponseStream(answer, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (answer.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _declared_length(request: httpx.Request) -> int | None:
    """The request's ``Content-Length``, or ``None`` when it declares none (sent chunked)."""
    values = request.headers.get_list("content-length")
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].isdigit():
        raise httpx.LocalProtocolError("the request's Content-Length is malformed")
    return int(values[0])


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


class _Upload:
    """A streamed request body; remembers the error that stopped it, which aiohttp would wrap.

    With a declared ``Content-Length`` the bytes are counted: more or fewer than declared
    raises :class:`httpx.LocalProtocolError` (as httpx's own transport does) before the framing
    breaks, so aiohttp closes the connection instead of returning it to the pool, where the
    next request (another user's, with their credential) would be read as this one's body.
    """

    def __init__(self, stream: Any, declared: int | None = None) -> None:
        self.stream = stream
        self.declared = declared
        self.failure: Exception | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        yield b""  # aiohttp sends the request head now, as httpx does, not with the first chunk
        sent = 0
        try:
            async for chunk in self.stream:
                sent += len(chunk)
                if self.declared is not None and sent > self.declared:
                    raise httpx.LocalProtocolError("Too much data for declared Content-Length")
                yield chunk
            if self.declared is not None and sent != self.declared:
                raise httpx.LocalProtocolError("Too little data for declared Content-Length")
        except Exception as failure:
            self.failure = failure
            raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, answer: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._answer = answer
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for data in self._answer.content.iter_any():
                for start in range(0, len(data), _CHUNK):  # at most what httpcore reads at once
                    yield data[start : start + _CHUNK]

    async def aclose(self) -> None:
        answer = self._answer
        if answer.content.at_eof():
            answer.release()  # the connection goes back to the pool
        else:
            answer.close()  # unread bytes: the connection cannot be reused


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    """aiohttp's failures as the ``httpx`` exceptions callers already handle."""
    import asyncio

    import aiohttp

    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(str(error), request=request) from error
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError) as error:
        raise httpx.ReadTimeout(str(error) or "timed out", request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(str(error), request=request) from error
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientResponseError,
    ) as error:
        raise httpx.RemoteProtocolError(str(error), request=request) from error
    except aiohttp.ClientOSError as error:
        raise httpx.ReadError(str(error), request=request) from error
    except (aiohttp.InvalidUrlClientError, aiohttp.NonHttpUrlClientError) as error:
        raise httpx.UnsupportedProtocol(str(error), request=request) from error
    except aiohttp.ClientError as error:
        raise httpx.TransportError(str(error), request=request) from error
