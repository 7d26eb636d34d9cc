"""A guarded app's own streams kept live: the same lease the proxy takes, for host apps.

The middleware and the MCP adapter hand an admitted request to the app. Most responses are
over in milliseconds and need nothing more; but an app's server-sent events, its long
downloads and its websockets run on after the decision. :func:`run_live` watches what the app
sends and, the moment the response turns out to be such a stream (a ``text/event-stream``
response, one without a ``Content-Length``, or an accepted websocket), takes a lease from
:attr:`Guard.streams <agentguard.Guard.streams>`. When the lease is cut (the key revoked, the
user disabled, the membership removed, the account closed, the key expired), the app is
cancelled and the stream ends as the proxy ends its own:

- a server-sent-event stream whose last send ended an event gets one ``event: error`` with the
  refusal's JSON body; then the connection is dropped without a clean end of the body
  (:class:`~agentguard.asgi._relay_stream.StreamCut` is raised to the server, as the proxy
  does), so a client can tell the stream was cut;
- another streamed body is dropped the same way, without the event;
- a websocket is closed with 1008 and the refusal's reason code.

The registry audits the cut once. A response with a ``Content-Length`` holds no lease: it is
bounded, and was decided live when it began. Costs nothing but one cancel scope and a wrapped
``send`` for a response that is not a stream.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from agentguard._redaction import install_log_redaction
from agentguard.asgi._relay_stream import StreamCut, error_event
from agentguard.asgi._responses import send_error
from agentguard.asgi._types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from agentguard._guard import Guard
    from agentguard._passage import Passage
    from agentguard._stream_lease import StreamLease

__all__ = ["run_live"]

_EVENT_STREAM = b"text/event-stream"


def _streams(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool]:
    """(is a stream, is server-sent events) for a response's headers."""
    sse = False
    length = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            length = True
        elif lowered == b"content-type":
            sse = value.split(b";", 1)[0].strip().lower() == _EVENT_STREAM
    return sse or not length, sse


class _Watch:
    """What the app has sent so far, and the lease once its response became a stream."""

    __slots__ = ("accepted", "boundary", "lease", "sse", "started")

    def __init__(self) -> None:
        self.started = False
        self.accepted = False
        self.sse = False
        self.boundary = True  # the last body sent ended an SSE event (or nothing was sent)
        self.lease: StreamLease | None = None


async def run_live(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    guard: Guard,
    passage: Passage,
    key: str | None,
) -> None:
    """Run ``app``; once its response is a stream, keep it only while ``passage`` stays valid.

    ``key`` is the credential the request presented (only its SHA-256 is kept, for the
    re-checks); ``None`` for a token that is not an agentguard key.
    """
    watch = _Watch()
    cancel = anyio.CancelScope()
    async with contextlib.AsyncExitStack() as leases:

        async def hold() -> None:
            lease = await leases.enter_async_context(guard.streams.hold(passage, key=key))
            lease.on_cut(cancel.cancel)
            watch.lease = lease

        async def watched(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                watch.started = True
                stream, watch.sse = _streams(list(message.get("headers", ())))
                if stream:
                    await hold()
            elif kind == "http.response.body":
                body = message.get("body", b"")
                if body:
                    watch.boundary = body.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))
            elif kind == "websocket.accept":
                watch.accepted = True
                await hold()
            if watch.lease is not None and watch.lease.is_cut:
                cancel.cancel()  # nothing more of this stream leaves once it is cut
                await anyio.lowlevel.checkpoint()
            await send(message)

        with cancel:
            await app(scope, receive, watched)
        lease = watch.lease
        if lease is None or lease.error is None:
            return
        await _end(scope, send, watch, lease)


async def _end(scope: Scope, send: Send, watch: _Watch, lease: StreamLease) -> None:
    """End a stream whose lease was cut, the way its protocol allows."""
    error = lease.error
    if error is None:  # pragma: no cover - only called for a cut lease
        return
    if scope["type"] == "websocket":
        if watch.accepted:
            await send({"type": "websocket.close", "code": 1008, "reason": error.reason.value})
        else:
            await send_error(scope, send, error, None)
        return
    if not watch.started:  # pragma: no cover - a lease is only taken once the response starts
        await send_error(scope, send, error, None)
        return
    install_log_redaction()  # the server's log of the cut: one warning, not a traceback
    sent_event = watch.sse and watch.boundary
    if sent_event:
        await send({"type": "http.response.body", "body": error_event(error), "more_body": True})
    raise StreamCut(error, error_event=sent_event)
