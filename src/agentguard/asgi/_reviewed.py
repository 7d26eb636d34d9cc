"""Running an ASGI app under a :class:`~agentguard.Passage`'s content review.

The request body is read (up to the request chain's cap) and reviewed before the app sees it,
then replayed; the app's response is held until the response reviewers release some of it, and
refused whole (403) or cut mid-stream when they block. Used by every ASGI adapter that hands an
admitted request to an app (the middleware, the MCP wrapper, FastAPI's installed review).
"""

from __future__ import annotations

from collections.abc import Callable

from agentguard._passage import Passage, ResponseReview
from agentguard.asgi._responses import send_error
from agentguard.asgi._types import ASGIApp, Message, Receive, Scope, Send
from agentguard.errors import RequestRefused
from agentguard.review._base import Direction, Verdict
from agentguard.review._chain import CHAIN_NAME
from agentguard.review._errors import ReviewBlocked, blocked

__all__ = ["call_reviewed", "run_admitted"]

# ASGI extensions that send a body the reviewers never see as bytes.
_UNREADABLE = frozenset({"http.response.pathsend", "http.response.zerocopysend"})


async def run_admitted(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, *, passage: Passage
) -> None:
    """Run ``app`` for a request the guard admitted, through every step the passage still
    has: content review both ways and, for a call held for approval, the approval step (with
    the body it binds). Every ASGI adapter that calls :meth:`Guard.admit` hands over here, so
    no adapter can forget a step. A websocket handshake held for approval binds an empty body.
    """
    if scope["type"] == "http":
        if passage.reviews_request or passage.reviews_response:
            await call_reviewed(app, scope, receive, send, passage)
        else:
            await app(scope, receive, send)
        return
    if passage.gate is not None:
        try:
            await passage.gate(b"")
        except RequestRefused as refusal:  # audited by the gate
            await send_error(scope, send, refusal, None)
            return
    await app(scope, receive, send)


async def call_reviewed(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, passage: Passage
) -> None:
    """Run ``app`` for an admitted ``http`` request, its content reviewed both ways."""
    if passage.reviews_request:
        replay = await _review_request(scope, receive, send, passage)
        if replay is None:
            return
        scope, receive = replay
    if not passage.reviews_response:
        await app(scope, receive, send)
        return
    reviewed = _ReviewedSend(scope, send, passage.review_response)
    try:
        await app(scope, receive, reviewed)
    finally:
        if reviewed.review is not None:
            await reviewed.review.close()


async def _review_request(
    scope: Scope, receive: Receive, send: Send, passage: Passage
) -> tuple[Scope, Receive] | None:
    """Read and review the body; the scope and receive the route gets, or ``None`` if the
    request was refused (or the client left)."""
    # Always read: over HTTP/2 (and HTTP/3) a body needs neither Content-Length nor chunking, and
    # a request without one gets an empty ``http.request`` at once.
    body = b""
    more = True
    while more and len(body) <= passage.request_cap:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        reviewed = await passage.review_request(body)
    except RequestRefused as refusal:  # a reviewer's block, an approval or budget refusal
        await send_error(scope, send, refusal, None)
        return None
    if reviewed is not body and reviewed != body:  # changed: read whole, so ``more`` is False
        body = reviewed
        framing = (b"content-length", b"transfer-encoding")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in framing]
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
        self,
        scope: Scope,
        send: Send,
        open_review: Callable[[bytes | None, bytes | None], ResponseReview | None],
    ):
        self.scope = scope
        self.send = send
        self.open_review = open_review
        self.review: ResponseReview | None = None
        self.start: Message | None = None
        self.refused = False

    async def __call__(self, message: Message) -> None:
        if self.refused:
            return  # we already answered with the refusal
        kind = message["type"]
        if kind == "http.response.start":
            headers = [(k.lower(), v) for k, v in message.get("headers", [])]
            kinds = [v for k, v in headers if k == b"content-type"]
            codings = [v for k, v in headers if k == b"content-encoding"]
            self.review = self.open_review(
                kinds[0] if kinds else None,
                b",".join(codings) if codings else None,
            )
            self.start = message
            return
        if kind in _UNREADABLE and self.review is not None:
            await self._unreadable(kind)
            return
        if kind != "http.response.body" or self.review is None:
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        try:
            out = await self.review.feed(body) if body else b""
            if not more:
                out += await self.review.finish()
        except ReviewBlocked as refusal:
            self.refused = True  # nothing more of this response goes out, whatever the app does
            if self.start is None:
                raise  # part of it went out already: cut the stream
            self.start = None
            await send_error(self.scope, self.send, refusal, None)
            return
        if self.start is not None and (out or not more):  # held until bytes are released
            await self._send_start(None if more else (body, out))
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    async def _unreadable(self, kind: str) -> None:
        """A body sent by reference (a file path, a zero-copy send): the reviewers cannot read
        it, so it is refused (or, if part of the response went out, the stream is cut)."""
        assert self.review is not None  # noqa: S101 - checked by the caller
        verdict = Verdict.block(CHAIN_NAME, f"unreadable_body:{kind.rsplit('.', 1)[-1]}")
        self.review.stream.findings.append(verdict)
        self.refused = True
        refusal = blocked(Direction.OUT, verdict)
        if self.start is None:
            raise refusal
        self.start = None
        await send_error(self.scope, self.send, refusal, None)

    async def _send_start(self, whole: tuple[bytes, bytes] | None) -> None:
        start, self.start = self.start, None
        assert start is not None  # noqa: S101 - checked by the caller
        headers = list(start.get("headers", []))
        if whole is None or whole[0] != whole[1]:
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            if whole is not None:
                headers.append((b"content-length", str(len(whole[1])).encode()))
        await self.send({**start, "headers": headers})
