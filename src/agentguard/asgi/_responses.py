"""Sending an RequestRefused (or any small JSON document) over ASGI."""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentguard.asgi._types import Receive, Scope, Send
from agentguard.errors import Challenge, RequestRefused

__all__ = ["answer_lifespan", "send_error", "send_json"]


async def send_json(
    send: Send,
    status: int,
    document: object,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """Send ``document`` as an ``application/json`` HTTP response."""
    body = json.dumps(document, separators=(",", ":")).encode()
    await send_raw(send, status, [("content-type", "application/json"), *headers], body)


async def send_raw(
    send: Send, status: int, headers: Sequence[tuple[str, str]], body: bytes
) -> None:
    """Send a complete HTTP response."""
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(
    scope: Scope, send: Send, error: RequestRefused, challenge: Challenge | None
) -> None:
    """Refuse the request: an HTTP error response, or a websocket denial.

    For websockets, the ASGI denial-response extension carries the same status and body when
    the server supports it; otherwise the handshake is closed (the server answers 403).
    """
    status, headers, body = error.to_http(challenge)
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": error.code or ""})
        return
    await send_raw(send, status, headers, body)


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI lifespan for an app that holds nothing to open or close (the operator
    and connect apps when served on their own)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
