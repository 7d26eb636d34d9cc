"""Receiving the agent's request body for the proxy: deadlines, a size cap, and a key scan.

A slow or stalled upload must not hold the service for everyone. The body is received with an
idle deadline (the longest wait for the next chunk) and a total deadline (408 past either), and,
when the service caps its size, received whole *before* an upstream connection is taken: a
trickling upload then holds no pooled upstream connection at all. Without a cap the body streams
upstream as it arrives, and :class:`~agentguard.asgi._limits.CallerSlots` bounds how many pooled
connections one caller can hold that way.

Compressed request bodies (a ``Content-Encoding`` other than ``identity``) are refused with 415:
the key scan and the reviewers would otherwise see compressed bytes they cannot judge. The body
is scanned for agentguard keys (:mod:`agentguard.credentials._keyscan`) whole, or chunk by chunk
with a hold-back when it streams, in which case finding one aborts the upstream request.

The body is scanned as the vendor will read it: its ``Content-Type`` is parsed strictly
(:func:`agentguard._content_type.parse_content_type`; one field, at most one plain ``charset``,
a charset Python decodes) and a body whose charset could be read in more than one way is refused
with 415 before any of it is read; otherwise the scan also reads it decoded from its charset
(:func:`agentguard._body_charset.body_encoding`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from agentguard._body_charset import HEAD_BYTES, body_encoding
from agentguard._content_type import AmbiguousContentType, ContentType, parse_content_type
from agentguard._request import GuardRequest
from agentguard._services import ServiceConfig
from agentguard.asgi._types import Receive
from agentguard.credentials._keyscan import KeyScanner
from agentguard.credentials._placement import upstream_query
from agentguard.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType

__all__ = [
    "BodyReader",
    "Upload",
    "_ClientGone",
    "check_content_encoding",
    "check_declared_length",
    "has_body",
    "receive_content",
    "request_content_type",
    "request_target",
]

_SCAN_STEP = 16 * 1024  # bytes scanned between two turns of the event loop
Review = Callable[[bytes], Awaitable[bytes]]
"""Runs the request reviewers over a body; returns the body to forward (raises to refuse)."""


class _ClientGone(Exception):
    """The agent disconnected before its request body was complete."""


@dataclass
class Upload:
    """What the proxy forwards for one request besides its headers.

    Attributes:
        caller: whose share of the service's upstream connections the exchange takes.
        scanner: the key scanner built for this request.
        content: the body: whole bytes, a scanned stream, or ``None`` for no body.
    """

    caller: str
    scanner: KeyScanner
    content: bytes | AsyncIterator[bytes] | None = field(default=None)


def has_body(request: GuardRequest) -> bool:
    """Whether the request declares a body (a non-zero length or a transfer coding)."""
    length, chunked = request.header(b"content-length"), request.header(b"transfer-encoding")
    return length not in (None, b"0") or chunked is not None


def check_declared_length(request: GuardRequest, cap: int | None) -> None:
    """Refuse (413) a declared body over ``cap`` before reading or sending any of it."""
    declared = request.header(b"content-length")
    if cap is not None and declared is not None and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"the request body exceeds {cap} bytes")


def check_content_encoding(request: GuardRequest) -> None:
    """Refuse (415) a body in any content coding but ``identity``."""
    for value in request.header_values(b"content-encoding"):
        codings = [item.strip().lower() for item in value.split(b",")]
        if any(coding not in (b"", b"identity") for coding in codings):
            raise UnsupportedMediaType(
                "compressed request bodies are not accepted (Content-Encoding); the gateway"
                " scans and reviews request bodies, so send the body uncompressed"
            )


def _unreadable(problem: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"the request body's Content-Type has no single reading ({problem}); send one"
        " Content-Type with at most one plain charset parameter that matches the body"
    )


def request_content_type(request: GuardRequest) -> ContentType:
    """The request's one Content-Type (415 if it could be read more than one way)."""
    values = [value.decode("latin-1") for value in request.header_values(b"content-type")]
    try:
        return parse_content_type(values)
    except AmbiguousContentType as error:
        raise _unreadable(str(error)) from None


def _body_encoding(content_type: ContentType, head: bytes) -> str | None:
    try:
        return body_encoding(content_type, head[:HEAD_BYTES])
    except AmbiguousContentType as error:
        raise _unreadable(str(error)) from None


def request_target(request: GuardRequest, service: ServiceConfig) -> bytes:
    """The path and query that would go upstream, without the placeholder, for the key scan."""
    if request.raw_path is not None:
        path = request.raw_path.split(b"?", 1)[0]
    else:
        path = request.path.encode("utf-8", "surrogateescape")
    query = upstream_query(request.query_string, service)
    return path + b"?" + query if query else path


class BodyReader:
    """Receives one request body from ASGI ``receive`` under the service's limits.

    Args:
        receive: the ASGI receive callable.
        service: gives ``max_request_bytes`` (413) and ``timeouts.body_idle``/``body_total``.
        scanner: checks the body for agentguard keys.
        content_type: the request's Content-Type (:func:`request_content_type`): the body is
            also scanned decoded from its charset.
    """

    def __init__(
        self,
        receive: Receive,
        service: ServiceConfig,
        scanner: KeyScanner,
        content_type: ContentType | None = None,
    ) -> None:
        self._receive = receive
        self.scanner = scanner
        self.content_type = content_type or ContentType()
        self._cap = service.max_request_bytes
        self._idle = service.timeouts.body_idle
        self._total = service.timeouts.body_total

    @property
    def capped(self) -> bool:
        """Whether the service caps the body, so it is received whole before forwarding."""
        return self._cap is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive, unscanned (raises 408, 413 or _ClientGone)."""
        deadline = anyio.current_time() + self._total
        size = 0
        while True:
            remaining = deadline - anyio.current_time()
            wait = min(self._idle, remaining)
            message = None
            if wait > 0:
                with anyio.move_on_after(wait):
                    message = await self._receive()
            if message is None:
                if remaining <= self._idle:
                    raise RequestTimeout(
                        f"the request body did not arrive within {self._total:g} s"
                    )
                raise RequestTimeout(f"no part of the request body arrived for {self._idle:g} s")
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if self._cap is not None and size > self._cap:
                raise PayloadTooLarge(f"the request body exceeds {self._cap} bytes")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def read(self) -> bytes:
        """The whole body, scanned for keys."""
        body = b"".join([chunk async for chunk in self.chunks()])
        await self.check(body)
        return body

    async def check(self, body: bytes) -> None:
        """Scan a whole body for keys in bounded steps, yielding to the event loop between them.

        The same hold-back scan as a streamed body, so a key across a step boundary is found;
        no step holds the loop (or, in a thread, the interpreter lock) for a whole large body.
        """
        scan = self.scanner.stream(_body_encoding(self.content_type, body))
        for start in range(0, len(body), _SCAN_STEP):
            scan.feed(body[start : start + _SCAN_STEP])
            await anyio.lowlevel.checkpoint()
        scan.finish()

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives, scanned with a hold-back; a key found raises mid-stream.

        The first :data:`~agentguard._body_charset.HEAD_BYTES` are gathered before anything is
        scanned or sent: they say which charset the body is also read in.
        """
        chunks = self.chunks()
        head = b""
        async for chunk in chunks:
            head += chunk
            if len(head) >= HEAD_BYTES:
                break
        scan = self.scanner.stream(_body_encoding(self.content_type, head))
        ready = scan.feed(head) if head else b""
        if ready:
            yield ready
        async for chunk in chunks:
            ready = scan.feed(chunk)
            if ready:
                yield ready
        tail = scan.finish()
        if tail:
            yield tail


async def _prefixed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def receive_content(
    reader: BodyReader, review: Review | None, review_cap: int
) -> bytes | AsyncIterator[bytes]:
    """The body to forward: received whole and reviewed when ``reader`` is capped; otherwise
    its first ``review_cap`` bytes reviewed (when there are reviewers) and the rest streamed."""
    if reader.capped:
        body = await reader.read()
        content = body if review is None else await review(body)
        if content is not body:  # redacted: scan what actually goes upstream
            await reader.check(content)
        return content
    if review is None:
        return reader.stream()
    body = b""
    rest = reader.stream()
    async for chunk in rest:
        body += chunk
        if len(body) > review_cap:
            return _prefixed(await review(body), rest)
    content = await review(body)
    await reader.check(content)
    return content
