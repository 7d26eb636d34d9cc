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

Reviewers (``request_reviewers``, ``response_reviewers``; see :mod:`agentguard.review`) see the
agent's request body before anything goes upstream (a block is a 403 and the upstream is never
called) and the response body before the agent does, on the same buffered or streamed path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from agentguard.asgi.relay import ResponseRelay, ResponseWithheld
from agentguard.asgi.responses import send_error
from agentguard.asgi.scope import request_from_scope, route_path
from agentguard.asgi.types import Receive, Scope, Send
from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.credentials.echo import SecretEchoed
from agentguard.credentials.placement import (
    attach_credential,
    extract_placeholder,
    upstream_headers,
    upstream_query,
)
from agentguard.errors import (
    AgentGuardError,
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    PayloadTooLarge,
    Reason,
)
from agentguard.httpclient import LazyClient
from agentguard.model import Principal
from agentguard.redaction import install_log_redaction
from agentguard.request import Credentials, GuardRequest
from agentguard.review.base import Direction, ReviewContext, Verdict
from agentguard.review.chain import ReviewChain, ReviewerLike, as_chain
from agentguard.review.errors import ReviewBlocked, blocked
from agentguard.review.events import media_type, record_findings
from agentguard.secret import Secret
from agentguard.services import ServiceConfig

if TYPE_CHECKING:
    from agentguard.credentials.swapper import CredentialSwapper
    from agentguard.guard import Guard

__all__ = ["ProxyApp", "ResponseWithheld"]

logger = logging.getLogger("agentguard.proxy")


class _ClientGone(Exception):
    pass


async def _request_body(receive: Receive, cap: int | None = None) -> AsyncIterator[bytes]:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if cap is not None and size > cap:
            raise PayloadTooLarge(f"the request body exceeds {cap} bytes")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _prefixed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


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
        request_reviewers: a :class:`~agentguard.review.ReviewChain` (or a list of reviewers)
            for the agent's request body; it is read up to the chain's cap before forwarding.
        response_reviewers: the same for the upstream's response body; when some reviewer
            cannot judge a stream window by window, responses are buffered up to the cap.
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
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
    ) -> None:
        self.guard = guard
        self.service = service
        self.swapper = swapper
        self.buffer_bytes = buffer_bytes
        self.request_reviewers = as_chain(request_reviewers)
        self.response_reviewers = as_chain(response_reviewers)
        self._checker = service.permission_checker()
        self._base = httpx.URL(service.base_url)
        self._base_path = self._base.raw_path.split(b"?")[0].rstrip(b"/")
        install_log_redaction()
        timeouts = service.timeouts
        self._http = LazyClient(
            client,
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=timeouts.read,
                write=timeouts.write,
                pool=timeouts.pool,
            ),
            limits=httpx.Limits(max_connections=service.max_connections),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"ProxyApp(service={self.service.name!r}, base_url={self.service.base_url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled client (created on first use, inside the running event loop)."""
        return self._http.client

    async def aclose(self) -> None:
        """Close the pooled client this app created (call it on application shutdown)."""
        await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008, "reason": "not proxied"})
            return
        request = request_from_scope(scope)
        relative = route_path(scope)
        presented: list[str] = []

        def placeholder() -> Credentials:
            found = extract_placeholder(request, self.service)
            presented.append(found.key)
            return found

        try:
            principal = await self.guard.authenticate(
                request,
                credentials=placeholder,
                requirement=self._checker.requirement(request.method, relative),
            )
        except AgentGuardError as error:
            await send_error(scope, send, error, self.guard.challenge)
            return
        try:
            content = await self._request_content(request, principal, receive)
            credential = await self.swapper.credential_for(principal, self.service)
            response = await self._forward(
                scope,
                request,
                receive,
                credential,
                content=content,
                placeholder=presented[0] if presented else None,
            )
            try:
                context = self._context(Direction.OUT, request, principal, response.headers)
                await self._relay(response, credential, send, context)
            finally:
                await response.aclose()
        except _ClientGone:
            return
        except ReviewBlocked as review_refusal:  # its review.verdict events are recorded
            await send_error(scope, send, review_refusal, None)
        except ResponseWithheld as cut:
            if not isinstance(cut.error, ReviewBlocked):
                with contextlib.suppress(AgentGuardError):  # the stream is cut either way
                    await self._record(request, principal, cut.error)
            raise
        except (AgentGuardError, httpx.HTTPError, SecretEchoed) as failure:
            refusal = self._as_error(failure)
            try:
                await self._record(request, principal, refusal)
            except AgentGuardError as unrecorded:  # the audit store failed too: say so (503)
                refusal = unrecorded
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

    def _context(
        self,
        direction: Direction,
        request: GuardRequest,
        principal: Principal,
        headers: httpx.Headers | None = None,
    ) -> ReviewContext:
        kind = request.header(b"content-type") if headers is None else headers.get("content-type")
        return ReviewContext(
            direction, request.method, request.audit_path, media_type(kind),
            self.service.name, principal, request.request_id,
        )  # fmt: skip

    async def _request_content(
        self, request: GuardRequest, principal: Principal, receive: Receive
    ) -> bytes | AsyncIterator[bytes] | None:
        """The reviewed request body, or ``None`` to stream it unreviewed (no reviewers)."""
        self._check_length(request)
        chain = self.request_reviewers
        if chain is None or not self._has_body(request):
            return None
        body = b""
        rest = _request_body(receive, self.service.max_request_bytes)
        async for chunk in rest:
            body += chunk
            if len(body) > chain.max_bytes:
                break
        context = self._context(Direction.IN, request, principal)
        result = await chain.review_body(context, body)
        await self._findings(result.findings, context)
        if result.blocked is not None:
            raise blocked(Direction.IN, result.blocked)
        if len(body) > chain.max_bytes:  # passed unreviewed by the chain's over_cap policy
            return _prefixed(body, rest)
        return result.body

    def _check_length(self, request: GuardRequest) -> None:
        """Refuse a declared body over the service's cap before reading or sending any of it."""
        cap = self.service.max_request_bytes
        declared = request.header(b"content-length")
        if cap is not None and declared is not None and declared.isdigit() and int(declared) > cap:
            raise PayloadTooLarge(f"the request body exceeds {cap} bytes")

    @staticmethod
    def _has_body(request: GuardRequest) -> bool:
        length, chunked = request.header(b"content-length"), request.header(b"transfer-encoding")
        return length not in (None, b"0") or chunked is not None

    async def _forward(
        self,
        scope: Scope,
        request: GuardRequest,
        receive: Receive,
        credential: Secret,
        *,
        content: bytes | AsyncIterator[bytes] | None = None,
        placeholder: str | None = None,
    ) -> httpx.Response:
        client = scope.get("client")
        headers = upstream_headers(
            request,
            self.service,
            client_address=client[0] if client else None,
            placeholder=placeholder,
        )
        query = upstream_query(request.query_string, self.service, placeholder=placeholder)
        headers, query = attach_credential(headers, query, self.service, credential)
        url = self._upstream_url(self._raw_relative(scope, request), query)
        if isinstance(content, bytes):  # reviewed, maybe redacted: httpx sets the length
            headers = [(name, value) for name, value in headers if name != b"content-length"]
        elif content is None and self._has_body(request):
            content = _request_body(receive, self.service.max_request_bytes)
        upstream = self.client.build_request(request.method, url, headers=headers, content=content)
        try:
            return await self.client.send(upstream, stream=True)
        except (httpx.HTTPError, _ClientGone, AgentGuardError):
            raise
        except Exception as failure:  # what httpx does not wrap: h11 framing, a bad Location
            logger.warning(
                "%s: upstream exchange failed: %s", self.service.name, type(failure).__name__
            )
            raise BadGateway(self.service.name, reason=Reason.UPSTREAM_PROTOCOL_ERROR) from None

    async def _relay(
        self, response: httpx.Response, credential: Secret, send: Send, context: ReviewContext
    ) -> None:
        """Send the upstream response on, scanning it for the credential and reviewing it."""
        relay = ResponseRelay(
            service=self.service.name,
            chain=self.response_reviewers,
            buffer_bytes=self.buffer_bytes,
            record=self._findings,
            as_error=self._as_error,
        )
        await relay.relay(response, credential, send, context)

    async def _findings(self, findings: Iterable[Verdict], context: ReviewContext) -> None:
        await record_findings(self.guard.audit, findings, context, self.guard.clock.now())

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
