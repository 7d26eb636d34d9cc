"""AgentGuardMiddleware: the guard in front of any ASGI app (Starlette, FastAPI, ...).

Pure ASGI (no ``BaseHTTPMiddleware``, which breaks streaming, background tasks and
contextvars): without reviewers it never reads the request body and passes the response
through untouched. With ``request_reviewers`` it reads the body (up to the chain's cap) before
the route runs and replays it; with ``response_reviewers`` it reviews what the route sends,
window by window or buffered up to the cap (see :mod:`agentguard.review`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from agentguard.asgi.responses import send_error
from agentguard.asgi.scope import PRINCIPAL_STATE_KEY, request_from_scope
from agentguard.asgi.types import ASGIApp, Message, Receive, Scope, Send
from agentguard.context import principal_var
from agentguard.errors import AgentGuardError
from agentguard.guard import Guard
from agentguard.model import Principal
from agentguard.request import GuardRequest, public_prefixes
from agentguard.review.base import Direction, ReviewContext
from agentguard.review.chain import ReviewChain, ReviewerLike, as_chain
from agentguard.review.errors import ReviewBlocked, blocked
from agentguard.review.events import media_type, record_findings
from agentguard.review.stream import ChainStream

__all__ = ["AgentGuardMiddleware"]


class AgentGuardMiddleware:
    """Guards every ``http`` and ``websocket`` request of ``app``.

    Allowed requests reach the app with the :class:`~agentguard.model.Principal` in
    ``request.state.agentguard_principal`` (``scope["state"]``) and in
    :func:`agentguard.current_principal`. Refused requests get the error response and never
    reach the app. ``lifespan`` passes through; any other scope type is an error.

    Args:
        app: the ASGI app to protect.
        guard: the :class:`~agentguard.Guard` that decides.
        public_paths: path prefixes (whole segments) that skip the guard, such as the mount
            point of :meth:`Guard.oauth_app` or a health check.
        request_reviewers: a :class:`~agentguard.review.ReviewChain` (or list of reviewers)
            for request bodies of guarded ``http`` requests; a block is a 403 before the route.
        response_reviewers: the same for the route's response bodies.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        *,
        public_paths: Sequence[str] = (),
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.request_reviewers = as_chain(request_reviewers)
        self.response_reviewers = as_chain(response_reviewers)
        self.public_paths = public_prefixes(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope_type not in ("http", "websocket"):
            raise RuntimeError(f"AgentGuardMiddleware cannot guard ASGI scope type {scope_type!r}")
        request = request_from_scope(scope)
        if request.in_public_paths(self.public_paths):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.guard.authenticate(request)
        except AgentGuardError as error:
            await send_error(scope, send, error, self.guard.challenge)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        token = principal_var.set(principal)
        try:
            if scope_type == "http" and (self.request_reviewers or self.response_reviewers):
                await self._reviewed(scope, receive, send, request, principal)
            else:
                await self.app(scope, receive, send)
        finally:
            principal_var.reset(token)

    def _context(
        self, direction: Direction, request: GuardRequest, principal: Principal, kind: bytes | None
    ) -> ReviewContext:
        return ReviewContext(
            direction, request.method, request.audit_path, media_type(kind), None, principal,
            request.request_id,
        )  # fmt: skip

    async def _reviewed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: GuardRequest,
        principal: Principal,
    ) -> None:
        if self.request_reviewers is not None:
            replay = await self._review_request(scope, receive, send, request, principal)
            if replay is None:
                return
            scope, receive = replay
        chain = self.response_reviewers
        if chain is None:
            await self.app(scope, receive, send)
            return
        reviewed = _ReviewedSend(scope, send, lambda kind: chain.stream(
            self._context(Direction.OUT, request, principal, kind)
        ))  # fmt: skip
        try:
            await self.app(scope, receive, reviewed)
        finally:
            if reviewed.stream is not None:
                await record_findings(
                    self.guard.audit,
                    reviewed.stream.findings,
                    reviewed.stream.context,
                    self.guard.clock.now(),
                )

    async def _review_request(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: GuardRequest,
        principal: Principal,
    ) -> tuple[Scope, Receive] | None:
        """Read and review the body; the scope and receive the route gets, or ``None`` if the
        request was refused (or the client left)."""
        chain = self.request_reviewers
        assert chain is not None  # noqa: S101 - checked by the caller
        length, chunked = request.header(b"content-length"), request.header(b"transfer-encoding")
        if length in (None, b"0") and chunked is None:
            return scope, receive
        body = b""
        more = True
        while more and len(body) <= chain.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
        context = self._context(Direction.IN, request, principal, request.header(b"content-type"))
        result = await chain.review_body(context, body)
        await record_findings(self.guard.audit, result.findings, context, self.guard.clock.now())
        if result.blocked is not None:
            await send_error(scope, send, blocked(Direction.IN, result.blocked), None)
            return None
        if result.changed:
            body = result.body
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        return scope, _replay(body, more, receive)


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that first gives ``body`` back, then reads on from the client."""
    pending = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class _ReviewedSend:
    """Holds the response start until the reviewers have released some of the body."""

    def __init__(
        self, scope: Scope, send: Send, open_stream: Callable[[bytes | None], ChainStream]
    ):
        self.scope = scope
        self.send = send
        self.open_stream = open_stream
        self.stream: ChainStream | None = None
        self.start: Message | None = None
        self.refused = False

    async def __call__(self, message: Message) -> None:
        if self.refused:
            return  # we already answered with the refusal
        kind = message["type"]
        if kind == "http.response.start":
            headers = dict(message.get("headers", []))
            self.stream = self.open_stream(headers.get(b"content-type"))
            self.start = message
            return
        if kind != "http.response.body" or self.stream is None:
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        try:
            out = await self.stream.feed(body) if body else b""
            if not more:
                out += await self.stream.finish()
        except ReviewBlocked as refusal:
            if self.start is None:
                raise
            self.start = None
            self.refused = True
            await send_error(self.scope, self.send, refusal, None)
            return
        if self.start is not None:
            await self._send_start(None if more else (body, out))
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    async def _send_start(self, whole: tuple[bytes, bytes] | None) -> None:
        start, self.start = self.start, None
        assert start is not None  # noqa: S101 - checked by the caller
        headers = list(start.get("headers", []))
        if whole is None or whole[0] != whole[1]:
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            if whole is not None:
                headers.append((b"content-length", str(len(whole[1])).encode()))
        await self.send({**start, "headers": headers})
