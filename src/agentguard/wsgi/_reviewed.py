"""Content review for WSGI apps: the request body before the app, the response as it streams.

The same :class:`~agentguard.Passage` steps as under ASGI, driven from WSGI threads on the
process's event loop. The request body is read from ``wsgi.input`` (up to the request chain's
cap), reviewed and handed to the app as a fresh ``wsgi.input``; the response's
``start_response`` is held until the reviewers release some of the body, so a block before that
is a whole 403, and a block after it cuts the stream (the server closes the connection).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from agentguard.errors import AgentGuardError, InvalidRequest, RequestRefused
from agentguard.review._base import Direction, Verdict
from agentguard.review._chain import CHAIN_NAME
from agentguard.review._errors import ReviewBlocked

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from agentguard._passage import Passage, ResponseReview
    from agentguard.wsgi._portal import EventLoopPortal

__all__ = ["ResponseCut", "call_reviewed"]


class ResponseCut(AgentGuardError):
    """Raised into the WSGI server to cut a response a reviewer blocked mid-stream."""


def _read_body(environ: WSGIEnvironment, cap: int) -> tuple[bytes, bool] | None:
    """Up to ``cap + 1`` bytes of the request body and whether more follows; ``None`` when the
    request has no body the app could read."""
    stream = environ.get("wsgi.input")
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if stream is None:
        return None
    if length_text and not (length_text.isascii() and length_text.isdigit()):
        raise InvalidRequest("the Content-Length is not a number")
    if length_text:
        length = int(length_text)
        body = _read_up_to(stream, min(length, cap + 1)) if length else b""
        return body, len(body) < length
    # No length: the body runs to the end of the input when the server says so
    # (``wsgi.input_terminated``, which Werkzeug and Flask read), or is chunked.
    terminated = bool(environ.get("wsgi.input_terminated"))
    chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    if not (terminated or chunked):
        return None
    body = _read_up_to(stream, cap + 1)
    return body, len(body) > cap


def _read_up_to(stream: Any, size: int) -> bytes:
    """Read until ``size`` bytes or the end of input: a ``read(n)`` may return fewer bytes
    than asked before the end (PEP 3333 allows short reads), and the steps must see it all."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def call_reviewed(
    app: WSGIApplication,
    environ: WSGIEnvironment,
    start_response: StartResponse,
    passage: Passage,
    *,
    portal: EventLoopPortal,
    refuse: Callable[[RequestRefused, StartResponse], list[bytes]],
) -> Iterable[bytes]:
    """Run ``app`` for an admitted request, its content reviewed both ways."""
    if passage.reviews_request:
        try:
            read = _read_body(environ, passage.request_cap)
        except RequestRefused as refusal:  # audited with the request's principal, then refused
            finding = Verdict.block(CHAIN_NAME, "malformed_content_length")
            context = passage.context(Direction.IN, passage.request.header(b"content-type"))
            portal.call(passage.reviews.record, (finding,), context)
            return refuse(refusal, start_response)
        if read is None and passage.gate is not None:  # no body: the approval binds b""
            read = (b"", False)
        if read is not None:
            body, more = read
            try:
                reviewed = portal.call(passage.review_request, body)
            except RequestRefused as refusal:
                return refuse(refusal, start_response)
            rest = environ["wsgi.input"]
            environ["wsgi.input"] = _Joined(reviewed, rest if more else None)
            if not more:  # read whole: the app gets exactly these bytes, one framing
                environ["CONTENT_LENGTH"] = str(len(reviewed))
                environ.pop("HTTP_TRANSFER_ENCODING", None)
    if not passage.reviews_response:
        return app(environ, start_response)
    held = _HeldStart(start_response)
    body_iter = app(environ, held)
    return _ReviewedBody(
        body_iter, held, passage, portal=portal, refuse=lambda e: refuse(e, start_response)
    )


class _Joined(io.RawIOBase):
    """``wsgi.input`` for the app: the reviewed bytes, then what the client still sends."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._head.readinto(buffer)
        if count or self._rest is None:
            return count
        chunk = self._rest.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _HeldStart:
    """A ``start_response`` that keeps the status and headers until the reviewers release."""

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None
        self.pending: list[bytes] = []
        self.sent = False

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers, self.exc_info = status, list(headers), exc_info
        return self.pending.append  # the legacy write(): queued ahead of the body

    def header(self, name: str) -> str | None:
        """Every field called ``name``, joined with commas (``None`` if there is none)."""
        values = [v for k, v in self.headers if k.lower() == name]
        return ",".join(values) if values else None

    def release(self, length: int | None) -> None:
        """Send the held start, with ``Content-Length`` fixed (or dropped when unknown)."""
        if self.sent or self.status is None:
            return
        self.sent = True
        headers = [(k, v) for k, v in self.headers if k.lower() != "content-length"]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        self._start_response(self.status, headers, self.exc_info)


class _ReviewedBody:
    """The app's body through the response reviewers; closes the app's iterable."""

    def __init__(
        self,
        body: Iterable[bytes],
        held: _HeldStart,
        passage: Passage,
        *,
        portal: EventLoopPortal,
        refuse: Callable[[RequestRefused], list[bytes]],
    ) -> None:
        self._body = body
        self._held = held
        self._passage = passage
        self._review: ResponseReview | None = None
        self._portal = portal
        self._refuse = refuse

    def __iter__(self) -> Iterator[bytes]:
        held, portal = self._held, self._portal
        chunks = iter(self._body)
        try:
            while True:
                try:
                    chunk = next(chunks)
                    done = False
                except StopIteration:
                    chunk, done = b"", True
                pending, held.pending = held.pending, []
                chunk = b"".join(pending) + chunk
                if held.status is None:  # PEP 3333: only empty chunks before start_response
                    if chunk:
                        raise RuntimeError("the WSGI app sent a body before start_response")
                    if done:
                        return
                    continue
                if self._review is None:
                    kind = next((v for k, v in held.headers if k.lower() == "content-type"), None)
                    self._review = self._passage.review_response(
                        kind, held.header("content-encoding")
                    )
                review = self._review
                if review is None:  # pragma: no cover - reviews_response said there is a chain
                    held.release(None)
                    yield from ([chunk] if chunk else [])
                    yield from chunks
                    return
                out = portal.call(review.feed, chunk) if chunk else b""
                if done:
                    out += portal.call(review.finish)
                if not held.sent and (out or done):
                    held.release(len(out) if done else None)
                if out:
                    yield out
                if done:
                    return
        except ReviewBlocked as refusal:
            if held.sent:
                raise ResponseCut(str(refusal)) from None
            held.sent = True
            yield from self._refuse(refusal)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._review is not None:
                self._portal.call(self._review.close)
