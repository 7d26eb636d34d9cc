"""ProxyApp: the agent calls us as it would call the vendor; the real credential goes upstream.

For each request: canonicalise the target once (:mod:`agentguard._target`; an ambiguous one is
400), take our placeholder from the vendor-native place, let the guard resolve it live and check
the service's route rules on that canonical path (and on any method override), refuse a key of
ours anywhere else in the request, receive the body under deadlines before taking an upstream
connection (:mod:`agentguard.asgi._upload`, with a per-caller share of the pool), get the real
(or minted) credential, strip every trace of the placeholder and of the agent's
``Authorization``/``DPoP``, attach the credential where the vendor expects it, and forward
exactly the authorised path to the service's fixed base URL.

The response (:mod:`agentguard.asgi._relay`) is decoded (only the codings we asked for; any
other is a 502) and scanned for every form of every secret of the call: the credential sent
and, for a minted token, the admin credential behind it, under a lease from ``Guard.streams``
that a key going invalid cuts. Websockets: :mod:`agentguard.asgi._websocket`.

Reviewers (``request_reviewers``, ``response_reviewers``; see :mod:`agentguard.review`) see the
agent's request body before anything goes upstream (a block is a 403 and the upstream is never
called) and the response body before the agent does, on the same buffered or streamed path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeGuard

import httpx

from agentguard._audience import canonical_resource
from agentguard._httpclient import LazyClient, proxy_transport
from agentguard._model import Principal
from agentguard._redaction import install_log_redaction
from agentguard._request import GuardRequest
from agentguard._secret import Secret
from agentguard._services import ServiceConfig
from agentguard._target import Target
from agentguard.asgi._limits import CallerSlots, ReleasingStream
from agentguard.asgi._relay import EchoScanners, ResponseRelay, ResponseWithheld
from agentguard.asgi._responses import send_error
from agentguard.asgi._scope import request_from_scope
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.asgi._upload import (
    BodyReader,
    Upload,
    _ClientGone,
    check_content_encoding,
    check_declared_length,
    has_body,
    receive_content,
    request_content_type,
    request_target,
)
from agentguard.asgi._websocket import WebsocketProxy, websocket_requirement
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.credentials._echo import SecretEchoed
from agentguard.credentials._keyscan import KeyScanner
from agentguard.credentials._overrides import may_carry_override
from agentguard.credentials._placement import (
    attach_credential,
    extract_placeholder,
    override_methods,
    upstream_headers,
    upstream_query,
)
from agentguard.errors import (
    BadGateway,
    ConfigurationError,
    GatewayTimeout,
    InvalidRequest,
    Reason,
    RequestRefused,
)
from agentguard.review._base import Direction, ReviewContext
from agentguard.review._chain import ReviewChain, ReviewerLike
from agentguard.review._errors import ReviewBlocked

if TYPE_CHECKING:
    from agentguard._guard import Guard
    from agentguard._passage import Passage
    from agentguard._stream_lease import StreamLease
    from agentguard.credentials._swapper import CredentialSwapper, Outgoing
    from agentguard.telemetry._decision import DecisionTrace

__all__ = ["ProxyApp", "ResponseWithheld"]

logger = logging.getLogger("agentguard.proxy")


class ProxyApp:
    """ASGI app fronting one upstream service. Mount it where the agent expects the vendor.

    Args:
        guard: decides every request (live key resolution, DPoP, audit).
        service: the upstream service: a :class:`~agentguard.ServiceConfig`, or the
            name of one of the guard's ``services``.
        swapper: provides the real credential per (principal, service); by default the
            guard's ``swapper``.
        client: a shared ``httpx.AsyncClient``; by default one is created per app, with the
            service's timeouts, no redirects followed, no cookies kept and no proxy settings
            from the environment.
        transport: an ``httpx`` transport for the created client (tests); by default
            :class:`~agentguard._httpclient.AiohttpTransport` when aiohttp is installed, else
            httpx's own.
        buffer_bytes: responses up to this size are scanned whole before the agent sees them.
        request_reviewers: a :class:`~agentguard.review.ReviewChain` (or a list of reviewers)
            for the agent's request body, instead of the guard's own; it is read up to the
            chain's cap before forwarding.
        response_reviewers: the same for the upstream's response body; when some reviewer
            cannot judge a stream window by window, responses are buffered up to the cap.
        websocket_max_bytes: the largest websocket message relayed either way (1 MiB by
            default); a larger one closes the socket with 1009 (see ``asgi._websocket``).
        resource: this service's RFC 8707 resource identifier (the URL agents call it at): a
            key issued for another resource is refused (401 ``invalid_token``, reason
            ``wrong_audience``); keys issued for no resource pass. The gateway sets it to
            ``<public_origin>/<service>`` when ``public_origin`` is set.
    """

    def __init__(
        self,
        guard: Guard,
        service: ServiceConfig | str,
        swapper: CredentialSwapper | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        buffer_bytes: int = 64 * 1024,
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        websocket_max_bytes: int = 1024 * 1024,
        resource: str | None = None,
    ) -> None:
        if isinstance(service, str):
            if service not in guard.services:
                raise ConfigurationError(
                    f"no service named {service!r}; pass Guard(services=[...])"
                )
            service = guard.services[service]
        swapper = swapper if swapper is not None else guard.swapper
        if swapper is None:
            raise ConfigurationError("a proxy needs a CredentialSwapper: pass Guard(swapper=...)")
        self.guard = guard
        self.service = service
        self.swapper = swapper
        self.buffer_bytes = buffer_bytes
        self.reviews = guard.reviews(request_reviewers, response_reviewers)
        self._checker = service.permission_checker()
        self._holds_approval = any(rule.approval for rule in self._checker.rules)
        parameter = service.parameter  # a vendor-native key field: the one an approval leaves out
        self._placement = None if parameter is None else (service.placement.value, parameter)
        self._base = httpx.URL(service.base_url)
        self._base_path = self._base.raw_path.split(b"?")[0].rstrip(b"/")
        install_log_redaction()
        t = service.timeouts
        timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)
        limits = httpx.Limits(max_connections=service.max_connections)
        if client is None and transport is None:
            transport = proxy_transport(limits)
        self._http = LazyClient(client, timeout=timeout, limits=limits, transport=transport)
        share = service.max_connections_per_caller or max(1, service.max_connections // 2)
        self._callers = CallerSlots(share)
        self._scanners = EchoScanners()
        self._websockets = WebsocketProxy(self, max_message_bytes=websocket_max_bytes)
        if resource is not None:
            try:
                canonical_resource(resource)
            except ValueError as error:
                raise ConfigurationError(f"service {service.name}: resource: {error}") from None
        self.resource = resource

    def __repr__(self) -> str:
        return f"ProxyApp(service={self.service.name!r}, base_url={self.service.base_url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled client (created on first use, inside the running event loop)."""
        return self._http.client

    async def aclose(self) -> None:
        """Close the pooled clients this app created (call it on application shutdown)."""
        await self._http.aclose()
        await self._websockets.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":  # decided as a GET, then relayed message by message
            await self._websockets(scope, receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"ProxyApp serves http and websocket scopes, not {scope['type']!r}")
        passage = await self._admit(scope, send)
        if passage is None:
            return
        request, principal = passage.request, passage.principal
        trace = passage.trace  # telemetry: the decision's span ends with the response
        send = send if trace is None else trace.watch(send)
        lease: StreamLease | None = None  # the response's lease on the key staying valid
        try:
            content = await self._request_content(passage, receive)
            outgoing = await self.swapper.outgoing(principal, self.service)
            response = await self._forward(request, outgoing.credential, content, trace)
            try:
                context = passage.context(Direction.OUT, response.headers.get("content-type"))
                key = extract_placeholder(request, self.service).key
                async with self.guard.streams.hold(passage, key=key) as lease:
                    await self._relay(response, outgoing, send, context, trace=trace, lease=lease)
            finally:
                await response.aclose()
        except _ClientGone:
            return
        except ReviewBlocked as review_refusal:  # its review.verdict events are recorded
            await send_error(scope, send, review_refusal, None)
        except ResponseWithheld as cut:
            if trace is not None:
                trace.refused(cut.error)
            if not isinstance(cut.error, ReviewBlocked) and not _from_lease(cut.error, lease):
                with contextlib.suppress(RequestRefused):  # the stream is cut either way
                    await self._record(request, principal, cut.error)
            raise
        except (RequestRefused, httpx.HTTPError, SecretEchoed) as failure:
            await send_error(scope, send, await self._refusal(passage, failure, lease), None)
        finally:
            if trace is not None:
                trace.end()

    async def _admit(self, scope: Scope, send: Send) -> Passage | None:
        """The guard's decision on ``scope`` (rules read on the canonical target below the mount;
        a websocket's in ``websocket_requirement``); ``None`` once a refusal was sent."""
        request = request_from_scope(scope, allow_encoded_slash=self.service.allow_encoded_slash)
        try:
            relative = self._relative(request)
        except InvalidRequest as outside:  # canonical, but not below the mount: never routed here
            await send_error(scope, send, outside, self.guard.challenge)
            return None
        needed = None
        if relative is not None and scope["type"] == "websocket":
            needed = websocket_requirement(self._checker, relative.path)
        elif relative is not None:
            needed = self._checker.requirement(request.method, relative.path)
        try:
            return await self.guard.admit(
                request,
                credentials=lambda: extract_placeholder(request, self.service),
                requirement=needed,
                reviews=self.reviews,
                service=self.service.name,
                placement=self._placement,
                resource=self.resource,
            )
        except RequestRefused as error:
            await send_error(scope, send, error, self.guard.challenge)
            return None

    async def _refusal(
        self, passage: Passage, failure: Exception, lease: StreamLease | None = None
    ) -> RequestRefused:
        """The refusal to send for a failure after the decision, audited (once)."""
        if passage.gate is not None and failure is passage.gate.refusal:  # audited there
            refusal = passage.gate.refusal
        elif _from_lease(failure, lease):  # a cut lease: the live-stream registry audited it
            refusal = failure
        else:
            refusal = self._as_error(failure)
            try:
                await self._record(passage.request, passage.principal, refusal)
            except RequestRefused as unrecorded:  # the audit store failed too: say so (503)
                refusal = unrecorded
        if passage.trace is not None:
            passage.trace.refused(refusal)
        return refusal

    def _as_error(self, failure: Exception) -> RequestRefused:
        if isinstance(failure, RequestRefused):
            return failure
        if isinstance(failure, SecretEchoed):
            return BadGateway(self.service.name, reason=Reason.SECRET_ECHO_BLOCKED)
        if isinstance(failure, httpx.TimeoutException):
            return GatewayTimeout(self.service.name)
        logger.warning("%s: upstream error %s", self.service.name, type(failure).__name__)
        if isinstance(failure, (httpx.RemoteProtocolError, httpx.DecodingError)):
            return BadGateway(self.service.name, reason=Reason.UPSTREAM_PROTOCOL_ERROR)
        return BadGateway(self.service.name, reason=Reason.UPSTREAM_UNREACHABLE)

    @staticmethod
    def _relative(request: GuardRequest) -> Target | None:
        """The canonical target below the mount, or ``None`` when the target is ambiguous.

        ``None`` is refused by :meth:`Guard.authenticate` (400, audited) before any key lookup.
        """
        try:
            target = request.target()
        except InvalidRequest:
            return None
        return target.under(request.root_path)

    @staticmethod
    def _raw_relative(request: GuardRequest) -> bytes:
        """Exactly the canonical form that was authorised: never the client's own encoding."""
        return request.target().under(request.root_path).raw

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

    async def _request_content(self, passage: Passage, receive: Receive) -> Upload:
        """Check the request and receive its body, before any upstream connection is taken.

        Refuses a method override the principal may not use (403), a compressed body (415) and
        an agentguard key outside the credential position (400); receives the body under the
        service's deadlines (408) and cap (413), whole when there is a cap, and reviews it.
        """
        request, principal = passage.request, passage.principal
        check_declared_length(request, self.service.max_request_bytes)
        self._authorize_overrides(request, principal)
        check_content_encoding(request)
        scanner = KeyScanner([extract_placeholder(request, self.service).key])
        scanner.check_request(
            request_target(request, self.service), upstream_headers(request, self.service)
        )
        upload = Upload(principal.user_id, scanner)
        if has_body(request):
            review = passage.review_request if passage.reviews_request else None
            reader = BodyReader(receive, self.service, scanner, request_content_type(request))
            if (
                not reader.capped
                and passage.gate is None
                and self._holds_approval
                and may_carry_override(request.header(b"content-type"))
            ):  # streamed, so a method override in it (to a held method) would go unread
                raise InvalidRequest(
                    "this service holds some calls for approval, so a form or JSON body must be "
                    "read whole to find a method override in it, and this service streams "
                    "bodies: set max_request_bytes on the service"
                )
            upload.content = await receive_content(reader, review, passage.request_cap)
            if isinstance(upload.content, bytes):  # a form field can override the method too
                self._authorize_overrides(request, principal, upload.content)
        if passage.gate is not None:  # no body read: the approval binds the empty body
            await passage.gate(b"")
        return upload

    def _authorize_overrides(
        self, request: GuardRequest, principal: Principal, body: bytes | None = None
    ) -> None:
        """Each method an override asks for must be allowed as well (403 otherwise)."""
        methods = override_methods(request, body)
        if not methods:  # nearly every request: no second look at the route rules
            return
        relative = self._relative(request)  # the target authorised; None was refused already
        path = relative.path if relative is not None else request.path
        own = self._checker.requirement(request.method, path)
        for method in methods:
            needed = self._checker.requirement(method, path)
            self._checker.authorize(principal, needed)
            if method == request.method.upper() or needed is None:
                continue
            gated = needed.approval or (method == "OVERRIDE" and self._holds_approval)
            costlier = own is not None and needed.cost > own.cost
            if gated or costlier:  # the gates decided on the method sent, not this one
                raise InvalidRequest(
                    f"a method override may not name {method} here: calls with it are held "
                    f"for approval or cost more, and those gates bind the method sent; send "
                    f"{method} itself"
                )

    async def _forward(
        self,
        request: GuardRequest,
        credential: Secret,
        content: Upload,
        trace: DecisionTrace | None = None,
    ) -> httpx.Response:
        """Send the request upstream in one of the caller's slots, freed when it is closed.

        ``trace`` (telemetry) puts its trace context in the request and times the exchange.
        """
        headers = upstream_headers(request, self.service, client_address=request.client)
        query = upstream_query(request.query_string, self.service)
        content.scanner.check_request(b"", headers)  # the forwarding headers added here
        headers, query = attach_credential(headers, query, self.service, credential)
        url = self._upstream_url(self._raw_relative(request), query)
        if isinstance(content.content, bytes):  # received whole: httpx sets the length
            headers = [(name, value) for name, value in headers if name != b"content-length"]
        if trace is not None:  # the decision's trace context replaces the agent's
            headers = trace.inject(headers)
        upstream = self.client.build_request(
            request.method, url, headers=headers, content=content.content
        )
        # A caller's client may hold cookies some user's upstream set: never forward them (the
        # agent's own Cookie header was dropped already; a key the vendor takes in Cookie stays).
        if (self.service.parameter or "").lower() != "cookie":
            upstream.headers.pop("cookie", None)
        release = self._callers.acquire(content.caller)
        sent = time.perf_counter() if trace is not None else 0.0
        try:
            try:
                response = await self._http.send(upstream)
            except (httpx.HTTPError, _ClientGone, RequestRefused):
                raise
            except Exception as failure:  # what httpx does not wrap: h11 framing, a bad Location
                logger.warning(
                    "%s: upstream exchange failed: %s", self.service.name, type(failure).__name__
                )
                raise BadGateway(self.service.name, reason=Reason.UPSTREAM_PROTOCOL_ERROR) from None
        except BaseException as failure:
            release()
            if trace is not None:
                trace.upstream(None, time.perf_counter() - sent, type(failure).__name__)
            raise
        if trace is not None:
            trace.upstream(response.status_code, time.perf_counter() - sent)
        assert isinstance(response.stream, httpx.AsyncByteStream)  # noqa: S101 - an AsyncClient's
        response.stream = ReleasingStream(response.stream, release)
        return response

    async def _relay(
        self,
        response: httpx.Response,
        outgoing: Outgoing,
        send: Send,
        context: ReviewContext,
        *,
        trace: DecisionTrace | None = None,
        lease: StreamLease | None = None,
    ) -> None:
        """Send the response on: scanned for every secret of the call, reviewed, leased."""
        relay = ResponseRelay(
            service=self.service.name,
            chain=self.reviews.response_chain,
            buffer_bytes=self.buffer_bytes,
            record=self.reviews.record if trace is None else trace.recording(self.reviews.record),
            as_error=self._as_error,
            scanners=self._scanners,
            rejected=lambda who, sent: self.swapper.rejected(who, self.service, sent),
        )
        await relay.relay(
            response, outgoing.credential, send, context, secrets=outgoing.involved, lease=lease
        )

    async def _record(
        self, request: GuardRequest, principal: Principal, error: RequestRefused
    ) -> None:
        await self.guard.record(
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


def _from_lease(error: object, lease: StreamLease | None) -> TypeGuard[RequestRefused]:
    """Whether ``error`` is the refusal of a cut ``lease`` (audited by the live-stream registry)."""
    cut = None if lease is None else lease.error
    return cut is not None and isinstance(error, RequestRefused) and error.reason is cut.reason
