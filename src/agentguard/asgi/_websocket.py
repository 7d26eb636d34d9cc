"""Websockets through the proxy: decided as the GET that opens them, relayed message by message.

**Deciding.** A handshake goes through :meth:`Guard.admit <agentguard.Guard.admit>` exactly as
an HTTP ``GET`` to the same path: the canonical target (an ambiguous one is refused before any
key lookup), the placeholder from the vendor-native place (``Authorization``, a header or a
query parameter; a ``DPoP`` proof for a bound key), live resolution, the service's route
rules. Messages act, so a websocket needs **write** unless its rule says otherwise:
:func:`websocket_requirement` is the stricter of what a ``GET`` and what the pseudo-method
``WEBSOCKET`` need there (``methods={"WEBSOCKET": "read"}`` declares a read-only feed;
``approval`` and ``cost`` name ``WEBSOCKET`` the same way). A refusal comes before
``websocket.accept``: the usual HTTP error (401 with ``WWW-Authenticate``, 403, ...) where the
server offers the ASGI denial-response extension (uvicorn does), else a close with 1008.

**Opening.** The upstream socket goes to the service's fixed base URL plus the canonical path
(``ws``/``wss`` for ``http``/``https``: plain ``ws`` only where the service allows plain http),
with the real credential where the vendor expects it and none of the agent's
``Authorization``, ``DPoP``, cookies or placeholder; a key of ours anywhere else in the
handshake is refused (400). The agent's subprotocols are offered upstream; the one the upstream
picks is accepted toward the agent. A redirect is never followed, and any answer but 101 is a
502 naming the service (a 401 also tells the swapper, as for HTTP).

**Relaying.** Text and binary messages go both ways, each at most ``max_message_bytes`` (a
larger one closes both sides with 1009). Each whole upstream message (and close reason) is
echo-scanned for every secret of the call, and so is what it completes with the messages before
it (a client may join them: a secret cut across messages is a secret); a match closes both
sides with 1008 and is audited, and the completing message is never sent. Agent messages
carrying a key of ours, alone or joined to the ones before, close the socket (1008, audited).
With reviewers, agent messages go through the request chain and upstream messages through the
response chain (a block closes with 1008; a redaction is sent redacted). A close code either
side sends is passed on; a lost upstream is 1011 toward the agent.

**Staying valid.** An open socket holds a lease from ``Guard.streams``: when the key, user,
membership or account stops being valid the lease is cut, the agent's side is closed with 1008
(the reason code, e.g. ``revoked``, as the close reason) and the upstream with 1001; the
registry audits the cut.

**Client.** aiohttp's websocket client: it is already the proxy's outbound HTTP transport (the
``server`` extra), sends the handshake's headers, query and subprotocols as given, bounds
message size while reading, negotiates no compression unless asked, and lets one task receive
while another sends or closes. Its client middlewares (3.12+) refuse redirects. The
``websockets`` package would be a second client to keep safe (it follows redirects itself).
Without aiohttp a websocket is refused with 503 (or a close with 1011) naming the extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

from agentguard._permissions import WEBSOCKET, websocket_requirement
from agentguard.asgi._responses import send_error
from agentguard.asgi._scope import request_from_scope
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.asgi._upload import request_target
from agentguard.asgi._websocket_pump import Upstream, relay
from agentguard.credentials._echo import SecretEchoed
from agentguard.credentials._keyscan import KeyScanner
from agentguard.credentials._placement import (
    attach_credential,
    extract_placeholder,
    upstream_headers,
    upstream_query,
)
from agentguard.errors import (
    BadGateway,
    GatewayTimeout,
    Reason,
    RequestRefused,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    import aiohttp

    from agentguard._passage import Passage
    from agentguard.asgi._proxy import ProxyApp

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "WEBSOCKET", "WebsocketProxy", "websocket_requirement"]

logger = logging.getLogger("agentguard.proxy")

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
"""The pseudo-method route rules name websockets by (``methods``, ``approval``, ``cost``)."""

# Set by the websocket client itself, or meaningless on a handshake.
_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"accept-encoding",
    }
)
_EXTRA = "agentguard[server]"


def _client() -> Any:
    """The aiohttp module when it is installed with client middlewares (3.12+), else None."""
    if importlib.util.find_spec("aiohttp") is None:
        return None
    import aiohttp

    return aiohttp if hasattr(aiohttp, "ClientMiddlewareType") else None


class _Redirected(Exception):
    """The upstream answered the handshake with a redirect (never followed)."""


async def _no_redirects(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if 300 <= response.status < 400:
        response.close()
        raise _Redirected
    return response


class WebsocketProxy:
    """The websocket side of one :class:`~agentguard.asgi.ProxyApp` (see the module docstring).

    Args:
        app: the proxy whose guard, service, swapper and reviewers decide and relay.
        max_message_bytes: the largest message relayed either way (1009 beyond it). The ASGI
            server buffers each agent message whole first: keep its own limit (uvicorn's
            ``ws_max_size``, 16 MiB by default) near this one.
    """

    def __init__(
        self, app: ProxyApp, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes is at least 1")
        self.app = app
        self.max_message_bytes = max_message_bytes
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WebsocketProxy(service={self.app.service.name!r})"

    async def aclose(self) -> None:
        """Close the upstream client session (created on the first websocket)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if _client() is None:
            await self._unavailable(scope, send)
            return
        passage = await app._admit(scope, send)
        if passage is None:
            return
        trace = passage.trace
        send = send if trace is None else trace.watch(send)
        try:
            try:
                upstream = await self._open(scope, passage)
            except (RequestRefused, SecretEchoed) as failure:
                await send_error(scope, send, await app._refusal(passage, failure), None)
                return
            presented = extract_placeholder(passage.request, app.service).key
            try:
                async with app.guard.streams.hold(passage, key=presented) as lease:
                    end = await relay(
                        app,
                        passage,
                        upstream,
                        lease,
                        receive=receive,
                        send=send,
                        limit=self.max_message_bytes,
                    )
            finally:
                upstream.release()
                await upstream.socket.close()
            if end.error is not None:
                if trace is not None:
                    trace.refused(end.error)
                with contextlib.suppress(RequestRefused):  # the socket is closed either way
                    await app._record(passage.request, passage.principal, end.error)
        finally:
            if trace is not None:
                trace.end()

    async def _unavailable(self, scope: Scope, send: Send) -> None:
        """Refuse: this installation has no websocket client (audited, named in the error)."""
        logger.warning("%s: websocket refused: install %s", self.app.service.name, _EXTRA)
        error = ServiceUnavailable(
            f"websocket proxying needs aiohttp 3.12 or later: install {_EXTRA}",
            reason=Reason.INTERNAL_ERROR,
        )
        refusal = await self.app.guard.refuse(request_from_scope(scope), error)
        if "websocket.http.response" in scope.get("extensions", {}):
            await send_error(scope, send, refusal, None)
        else:
            await send({"type": "websocket.close", "code": 1011, "reason": f"install {_EXTRA}"})

    async def _open(self, scope: Scope, passage: Passage) -> Upstream:
        """Check the handshake, get the credential and open the upstream socket."""
        app, service = self.app, self.app.service
        request, principal = passage.request, passage.principal
        if passage.gate is not None:  # held for approval: the approval opens the socket
            await passage.gate(b"")
        headers = upstream_headers(request, service, client_address=request.client)
        keys = KeyScanner([extract_placeholder(request, service).key])
        keys.check_request(request_target(request, service), headers)  # subprotocols included
        outgoing = await app.swapper.outgoing(principal, service)
        headers = [(name, value) for name, value in headers if name.lower() not in _HANDSHAKE]
        query = upstream_query(request.query_string, service)
        headers, query = attach_credential(headers, query, service, outgoing.credential)
        url = app._upstream_url(app._raw_relative(request), query)
        if passage.trace is not None:
            headers = passage.trace.inject(headers)
        secrets = frozenset(secret.reveal() for secret in (outgoing.credential, *outgoing.involved))
        release = app._callers.acquire(principal.user_id)
        try:
            socket = await self._connect(url, headers, scope.get("subprotocols") or ())
        except _Rejected:
            release()
            await app.swapper.rejected(principal, service, outgoing.credential)
            raise BadGateway(service.name, reason=Reason.UPSTREAM_REJECTED_CREDENTIAL) from None
        except BaseException:
            release()
            raise
        return Upstream(socket, keys, app._scanners.get(secrets), release)

    async def _connect(
        self, url: httpx.URL, headers: list[tuple[bytes, bytes]], protocols: Sequence[str]
    ) -> aiohttp.ClientWebSocketResponse[bool]:
        """The upstream socket, or the refusal for a failed handshake (502/504)."""
        import aiohttp
        from multidict import CIMultiDict
        from yarl import URL

        name, timeouts = self.app.service.name, self.app.service.timeouts
        scheme = "wss" if url.scheme == "https" else "ws"
        target = URL(scheme + str(url)[len(url.scheme) :], encoded=True)
        fields = CIMultiDict(
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in headers
        )
        try:
            return await self._client_session().ws_connect(
                target,
                headers=fields,
                protocols=tuple(protocols),
                autoclose=False,
                max_msg_size=self.max_message_bytes
                + 1,  # aiohttp refuses a message of exactly this size
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeouts.connect),
            )
        except aiohttp.WSServerHandshakeError as refused:
            if refused.status == 401:
                raise _Rejected from None
            raise BadGateway(
                name,
                f"{name}: the service refused the websocket handshake (HTTP {refused.status})",
                reason=Reason.UPSTREAM_PROTOCOL_ERROR,
            ) from None
        except _Redirected:
            raise BadGateway(
                name,
                f"{name}: the service answered the websocket handshake with a redirect, "
                "which the gateway never follows",
                reason=Reason.UPSTREAM_PROTOCOL_ERROR,
            ) from None
        except (aiohttp.ServerTimeoutError, TimeoutError):
            raise GatewayTimeout(name) from None
        except aiohttp.ClientConnectorError:
            raise BadGateway(name, reason=Reason.UPSTREAM_UNREACHABLE) from None
        except (aiohttp.ClientError, OSError, ValueError) as failure:
            logger.warning("%s: websocket handshake failed: %s", name, type(failure).__name__)
            raise BadGateway(name, reason=Reason.UPSTREAM_PROTOCOL_ERROR) from None

    def _client_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            service = self.app.service
            timeouts = service.timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=service.max_connections,
                    limit_per_host=0,
                    ssl=httpx.create_ssl_context(trust_env=False),  # httpx's own trust
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                requote_redirect_url=False,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.connect + timeouts.pool,
                    sock_connect=timeouts.connect,
                    sock_read=timeouts.read,
                ),
                middlewares=(_no_redirects,),
            )
        return self._session


class _Rejected(Exception):
    """The upstream answered the handshake with 401."""
