"""ProxyApp: the agent calls us as it would call the vendor; the real credential goes upstream.

For each request: take our placeholder from the vendor-native place, let the guard resolve it
live and check the service's route rules, get the real (or minted) credential, strip every trace
of the placeholder and of the agent's ``Authorization``/``DPoP``, attach the credential where the
vendor expects it, and forward to the service's fixed base URL with one pooled
``httpx.AsyncClient``, streaming both ways.

The response is scanned for any form of the credential that was sent. Responses that fit in the
first ``buffer_bytes`` are scanned whole before anything is sent, so an echo becomes a clean 502;
larger ones stream through a scanner that holds back just enough bytes to see across chunk
boundaries, and a stream that turns out to echo the credential is cut off mid-way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from agentguard.asgi.responses import send_error
from agentguard.asgi.scope import request_from_scope, route_path
from agentguard.asgi.types import Message, Receive, Scope, Send
from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.credentials.echo import EchoScanner, SecretEchoed
from agentguard.credentials.placement import (
    HOP_BY_HOP,
    attach_credential,
    extract_placeholder,
    upstream_headers,
    upstream_query,
)
from agentguard.errors import AgentGuardError, BadGateway, GatewayTimeout, InvalidRequest, Reason
from agentguard.model import Principal
from agentguard.redaction import install_log_redaction
from agentguard.request import GuardRequest
from agentguard.secret import Secret
from agentguard.services import ServiceConfig

if TYPE_CHECKING:
    from agentguard.credentials.swapper import CredentialSwapper
    from agentguard.guard import Guard

__all__ = ["ProxyApp", "ResponseWithheld"]

logger = logging.getLogger("agentguard.proxy")

_DROPPED_RESPONSE = HOP_BY_HOP | {b"content-length", b"content-encoding", b"set-cookie"}


class ResponseWithheld(Exception):
    """A response failed after it had started (an echoed credential, an upstream failure).

    The stream is cut: the exception propagates to the ASGI server, which drops the connection
    so the agent sees an incomplete response rather than a silently truncated one.
    """

    def __init__(self, error: AgentGuardError) -> None:
        self.error = error
        super().__init__(error.description)


class _ClientGone(Exception):
    pass


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class ProxyApp:
    """ASGI app fronting one upstream service. Mount it where the agent expects the vendor.

    Args:
        guard: decides every request (live key resolution, DPoP, audit).
        service: the upstream service.
        swapper: provides the real credential per (principal, service).
        client: a shared ``httpx.AsyncClient``; by default one is created per app, with the
            service's timeouts, no redirects followed and no proxy settings from the environment.
        transport: an ``httpx`` transport for the created client (tests).
        buffer_bytes: responses up to this size are scanned whole before the agent sees them.
    """

    def __init__(
        self,
        guard: Guard,
        service: ServiceConfig,
        swapper: CredentialSwapper,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        buffer_bytes: int = 64 * 1024,
    ) -> None:
        self.guard = guard
        self.service = service
        self.swapper = swapper
        self.buffer_bytes = buffer_bytes
        self._checker = service.permission_checker()
        self._base = httpx.URL(service.base_url)
        self._base_path = self._base.raw_path.split(b"?")[0].rstrip(b"/")
        install_log_redaction()
        self._owns_client = client is None
        self._client = client
        self._transport = transport

    def __repr__(self) -> str:
        return f"ProxyApp(service={self.service.name!r}, base_url={self.service.base_url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled client (created on first use, inside the running event loop)."""
        if self._client is None:
            timeouts = self.service.timeouts
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=timeouts.connect,
                    read=timeouts.read,
                    write=timeouts.write,
                    pool=timeouts.pool,
                ),
                limits=httpx.Limits(max_connections=self.service.max_connections),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the pooled client this app created (call it on application shutdown)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008, "reason": "not proxied"})
            return
        request = request_from_scope(scope)
        relative = route_path(scope)
        try:
            principal = await self.guard.authenticate(
                request,
                credentials=lambda: extract_placeholder(request, self.service),
                requirement=self._checker.requirement(request.method, relative),
            )
        except AgentGuardError as error:
            await send_error(scope, send, error, self.guard.challenge)
            return
        try:
            credential = await self.swapper.credential_for(principal, self.service)
            response = await self._forward(scope, request, receive, credential)
            try:
                await self._relay(response, credential, send)
            finally:
                await response.aclose()
        except _ClientGone:
            return
        except ResponseWithheld as cut:
            await self._record(request, principal, cut.error)
            raise
        except (AgentGuardError, httpx.HTTPError, SecretEchoed) as failure:
            refusal = self._as_error(failure)
            await self._record(request, principal, refusal)
            await send_error(scope, send, refusal, None)

    def _as_error(self, failure: Exception) -> AgentGuardError:
        if isinstance(failure, AgentGuardError):
            return failure
        if isinstance(failure, SecretEchoed):
            return BadGateway(self.service.name, reason=Reason.SECRET_ECHO_BLOCKED)
        if isinstance(failure, httpx.TimeoutException):
            return GatewayTimeout(self.service.name)
        logger.warning("%s: upstream error %s", self.service.name, type(failure).__name__)
        if isinstance(failure, (httpx.RemoteProtocolError, httpx.DecodingError)):
            return BadGateway(self.service.name, reason=Reason.UPSTREAM_PROTOCOL_ERROR)
        return BadGateway(self.service.name, reason=Reason.UPSTREAM_UNREACHABLE)

    def _raw_relative(self, scope: Scope, request: GuardRequest) -> bytes:
        root = request.root_path.encode("latin-1")
        raw = request.raw_path
        if raw is not None:
            raw = raw.split(b"?", 1)[0]
            if raw.startswith(root):
                return raw[len(root) :]
        return quote(route_path(scope), safe="/:@!$&'()*+,;=-._~%").encode("ascii")

    def _upstream_url(self, relative: bytes, query: bytes) -> httpx.URL:
        if relative and not relative.startswith(b"/"):
            relative = b"/" + relative
        if b"\\" in relative or b"#" in relative or b"//" in relative:
            raise InvalidRequest("the path is not a plain relative path")
        raw = self._base_path + relative
        if query:
            raw += b"?" + query
        try:
            url = self._base.copy_with(raw_path=raw or b"/")
        except httpx.InvalidURL:
            raise InvalidRequest("the path or query is not a valid URL part") from None
        if (url.scheme, url.host, url.port) != (
            self._base.scheme,
            self._base.host,
            self._base.port,
        ):
            raise InvalidRequest("the request would leave the service's base URL")
        return url

    async def _forward(
        self, scope: Scope, request: GuardRequest, receive: Receive, credential: Secret
    ) -> httpx.Response:
        client = scope.get("client")
        headers = upstream_headers(
            request, self.service, client_address=client[0] if client else None
        )
        query = upstream_query(request.query_string, self.service)
        headers, query = attach_credential(headers, query, self.service, credential)
        url = self._upstream_url(self._raw_relative(scope, request), query)
        has_body = request.header(b"content-length") not in (None, b"0") or (
            request.header(b"transfer-encoding") is not None
        )
        upstream = self.client.build_request(
            request.method,
            url,
            headers=headers,
            content=_request_body(receive) if has_body else None,
        )
        return await self.client.send(upstream, stream=True)

    async def _relay(self, response: httpx.Response, credential: Secret, send: Send) -> None:
        """Send the upstream response on, scanning it for the credential."""
        if response.status_code == 401:
            raise BadGateway(self.service.name, reason=Reason.UPSTREAM_REJECTED_CREDENTIAL)
        scanner = EchoScanner([credential.reveal()])
        headers = [
            (name.lower(), value)
            for name, value in response.headers.raw
            if name.lower() not in _DROPPED_RESPONSE
        ]
        scanner.check_headers(headers)
        stream = scanner.stream()
        chunks = response.aiter_bytes().__aiter__()
        released: list[bytes] = []
        size = 0
        finished = False
        while size < self.buffer_bytes:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                finished = True
                break
            size += len(chunk)
            released.append(stream.feed(chunk))
        if finished:
            body = b"".join(released) + stream.finish()
            headers.append((b"content-length", str(len(body)).encode()))
            await send(self._start(response.status_code, headers))
            await send({"type": "http.response.body", "body": body})
            return
        await send(self._start(response.status_code, headers))
        await send({"type": "http.response.body", "body": b"".join(released), "more_body": True})
        try:
            async for chunk in chunks:
                safe = stream.feed(chunk)
                if safe:
                    await send({"type": "http.response.body", "body": safe, "more_body": True})
        except (httpx.HTTPError, SecretEchoed) as failure:
            raise ResponseWithheld(self._as_error(failure)) from None
        await send({"type": "http.response.body", "body": stream.finish()})

    @staticmethod
    def _start(status: int, headers: Sequence[tuple[bytes, bytes]]) -> Message:
        return {"type": "http.response.start", "status": status, "headers": list(headers)}

    async def _record(
        self, request: GuardRequest, principal: Principal, error: AgentGuardError
    ) -> None:
        await self.guard.audit.record(
            AuditEvent(
                action=Action.PROXY_UPSTREAM,
                ts=self.guard.clock.now(),
                decision=Decision.DENY,
                reason=error.reason.value,
                service=self.service.name,
                method=request.method,
                path=request.audit_path,
                status=error.status,
                request_id=request.request_id,
                user_id=principal.user_id,
                workspace_id=principal.workspace_id,
                account_id=principal.account_id,
                key_id=principal.key_id,
                family_id=principal.family_id,
            )
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
