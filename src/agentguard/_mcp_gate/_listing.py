"""Filtering ``tools/list`` results down to the tools the caller may call.

Wraps an ASGI ``send``. A JSON response (``application/json``) is held whole, up to a cap, and
rewritten; a ``text/event-stream`` response is rewritten event by event (each event held up to
the cap), so a long-lived stream keeps flowing. A JSON-RPC response whose ``result.tools`` is a
list keeps the entries ``keep(name, annotations)`` accepts; everything else passes unchanged,
byte for byte. What cannot be read (over the cap, a compressed body, JSON that does not parse
where a listing was asked for) fails closed: ``502`` before the response started, or the stream
ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from agentguard.asgi._responses import send_error
from agentguard.asgi._types import Message, Scope, Send
from agentguard.errors import BadGateway, Reason

__all__ = ["ListingFilter", "filter_message"]

Keep = Callable[[str, Any], bool]
#: A blank line ends an event: two line ends in a row (CRLF, LF or a CR not before LF).
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LINE = re.compile(rb"\r\n|\n|\r")


def filter_message(message: Any, keep: Keep, learn: Callable[[str, Any], None]) -> bool:
    """Filter one JSON-RPC message (or a batch) in place; whether anything was removed."""
    if isinstance(message, list):
        changed = [filter_message(item, keep, learn) for item in message]
        return any(changed)
    if not isinstance(message, dict) or "method" in message:
        return False
    result = message.get("result")
    if not isinstance(result, dict):
        return False
    tools = result.get("tools")
    if not isinstance(tools, list):
        return False
    kept = []
    for entry in tools:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue  # a nameless entry is no tool anyone may call
        annotations = entry.get("annotations")
        learn(name, annotations)
        if keep(name, annotations):
            kept.append(entry)
    if len(kept) == len(tools):
        return False
    result["tools"] = kept
    return True


def _media_type(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower().decode("latin-1")
    return ""


def _encoded(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-encoding" and value.strip().lower() not in (b"", b"identity")
        for name, value in headers
    )


class ListingFilter:
    """A ``send`` that filters ``tools/list`` results (see the module docstring).

    Args:
        scope: the request's scope (for refusals).
        send: the server's ``send``.
        keep: whether the caller may see tool ``name`` (given its annotations).
        learn: told every listed tool and its annotations, before filtering.
        cap: the most bytes held at once (a whole JSON body, or one event).
        service: named in the 502 when a listing cannot be filtered.
    """

    def __init__(
        self,
        scope: Scope,
        send: Send,
        *,
        keep: Keep,
        learn: Callable[[str, Any], None],
        cap: int,
        service: str,
    ) -> None:
        self.scope = scope
        self.send = send
        self.keep = keep
        self.learn = learn
        self.cap = cap
        self.service = service
        self._mode = "pass"
        self._start: Message | None = None
        self._held = bytearray()
        self._scanned = 0  # bytes of _held already searched for an event's end
        self._done = False

    async def __call__(self, message: Message) -> None:
        if self._done:
            return  # refused or cut already: the server's remaining output goes nowhere
        kind = message["type"]
        if kind == "http.response.start":
            await self._started(message)
        elif kind == "http.response.body" and self._mode == "refuse":
            await self._refuse("a compressed body")
        elif kind == "http.response.body" and self._mode == "json":
            await self._json_body(message)
        elif kind == "http.response.body" and self._mode == "sse":
            await self._sse_body(message)
        else:
            await self.send(message)

    async def _started(self, message: Message) -> None:
        headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        media = _media_type(headers)
        if media == "application/json" or media.endswith("+json"):
            self._mode = "json"
        elif media == "text/event-stream":
            self._mode = "sse"
        if self._mode != "pass" and _encoded(headers):
            self._mode = "refuse"
            self._start = message
            return
        if self._mode == "json":
            self._start = message
            return
        if self._mode == "sse":
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            message = {**message, "headers": headers}
        await self.send(message)

    async def _refuse(self, why: str) -> None:
        self._done = True
        if self._start is None:  # the stream started: end it here
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self._start = None
        refusal = BadGateway(
            self.service,
            f"{self.service}: the tools/list response cannot be filtered ({why})",
            reason=Reason.UPSTREAM_PROTOCOL_ERROR,
        )
        await send_error(self.scope, self.send, refusal, None)

    async def _json_body(self, message: Message) -> None:
        self._held += message.get("body", b"")
        if len(self._held) > self.cap:
            await self._refuse(f"over {self.cap} bytes")
            return
        if message.get("more_body", False):
            return
        body = bytes(self._held)
        try:
            document = json.loads(body) if body.strip() else None
        except (ValueError, RecursionError):
            await self._refuse("not JSON")
            return
        if filter_message(document, self.keep, self.learn):
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        start, self._start = self._start, None
        assert start is not None  # noqa: S101 - held since the start
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _sse_body(self, message: Message) -> None:
        self._held += message.get("body", b"")
        more = message.get("more_body", False)
        out = bytearray()
        while True:
            found = _EVENT_END.search(self._held, max(0, self._scanned - 3))
            if found is None:
                self._scanned = len(self._held)
                break
            if found.end() > self.cap:
                break
            event = bytes(self._held[: found.end()])
            del self._held[: found.end()]
            self._scanned = 0
            out += self._event(event)
        if len(self._held) > self.cap:
            if out:
                await self.send(
                    {"type": "http.response.body", "body": bytes(out), "more_body": True}
                )
            await self._refuse(f"an event over {self.cap} bytes")
            return
        if not more and self._held:  # an unterminated last event: filtered like the others
            out += self._event(bytes(self._held))
            self._held.clear()
        if out or not more:
            await self.send({"type": "http.response.body", "body": bytes(out), "more_body": more})

    def _event(self, event: bytes) -> bytes:
        """One SSE event (with its terminator), rewritten if its data is a listing."""
        lines = _LINE.split(event.rstrip(b"\r\n"))
        data = [line for line in lines if line == b"data" or line.startswith(b"data:")]
        if not data:
            return event
        payload = b"\n".join(_field_value(line) for line in data)
        try:
            # As clients read an event stream: always UTF-8, an invalid byte replaced (WHATWG
            # SSE, httpx2); strict decoding would pass the listing on unread and unfiltered.
            document = json.loads(payload.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return event  # not JSON: no JSON-RPC client reads a listing from it
        if not filter_message(document, self.keep, self.learn):
            return event
        others = [line for line in lines if not (line == b"data" or line.startswith(b"data:"))]
        rewritten = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        return b"\n".join([*others, b"data: " + rewritten]) + b"\n\n"


def _field_value(line: bytes) -> bytes:
    """An SSE ``data`` line's value: after the colon, less one leading space."""
    value = line[5:] if line.startswith(b"data:") else b""
    return value[1:] if value.startswith(b" ") else value
