"""Sending an upstream response on to the agent: decoded, echo-scanned, reviewed, buffered or
streamed.

What the agent reads is what was scanned:

- **Codings.** The proxy asks upstream for gzip and deflate only
  (:data:`~agentguard.credentials._placement.UPSTREAM_ACCEPT_ENCODING`), which httpx decodes.
  A response in any other content coding (``br``, ``zstd``, ``compress``, an unknown token,
  also stacked after a known one), or with a transfer coding other than ``chunked``, is
  refused with a 502 naming the service: httpx passes codings it does not know through
  undecoded, and the scanner would see compressed bytes while the agent decompresses the key.
- **Charsets.** The ``Content-Type`` is parsed once, strictly
  (:func:`~agentguard._content_type.parse_content_type`): two Content-Type fields, two charset
  parameters (any case), an RFC 2231 ``charset*``, a charset Python cannot decode or a
  malformed value is refused with a 502 naming the service, since clients would read such a
  header differently. The body's reading is then chosen once
  (:func:`~agentguard._body_charset.body_encoding`: byte-order mark, declared charset, the
  body's own XML declaration or HTML ``<meta charset>``, JSON's NUL sniffing; a body
  declaring a charset other than its header's is refused too). A body not in UTF-8 is
  decoded and re-encoded as UTF-8, its own declaration rewritten to UTF-8, and a text
  body always leaves with one canonical ``type/subtype; ...; charset=utf-8``, so that every
  client (httpx, browsers, XML and HTML parsers) reads the characters that were scanned; a
  text body that still declares another charset anywhere is refused (cut, if streaming).
- **Echo scan.** Every secret of the call (the credential sent and, for a minted token, the
  admin credential it came from) is looked for in every header name and value and in the body,
  in every form and view of :class:`~agentguard.credentials.EchoScanner`.

Responses that fit in the first ``buffer_bytes`` are scanned whole before anything is sent, so
an echo becomes a clean 502; larger ones stream through a scanner that holds back just enough
bytes to see across chunk boundaries, and a stream that turns out to echo a credential is cut
off mid-way.
"""

from __future__ import annotations

import codecs
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import anyio.lowlevel
import httpx

from agentguard._body_charset import (
    HEAD_BYTES,
    body_encoding,
    check_declarations,
    declare_utf8_in_body,
    textual,
)
from agentguard._content_type import AmbiguousContentType, ContentType, parse_content_type
from agentguard._model import Principal
from agentguard._secret import Secret
from agentguard.asgi._types import Message, Send
from agentguard.credentials._echo import EchoScanner, SecretEchoed, StreamScanner
from agentguard.credentials._placement import HOP_BY_HOP
from agentguard.errors import AgentGuardError, BadGateway, Reason, RequestRefused
from agentguard.review._base import Direction, ReviewContext, Verdict
from agentguard.review._chain import ReviewChain
from agentguard.review._errors import ReviewBlocked, blocked

__all__ = [
    "DECODED_CODINGS",
    "EchoScanners",
    "ResponseRelay",
    "ResponseWithheld",
    "refused_coding",
]

# The gateway's own server sets Date and Server; the upstream's would arrive twice.
_DROPPED_RESPONSE = HOP_BY_HOP | {
    b"agentguard-approval",  # ours alone: a vendor's must not pass for a held call
    b"agentguard-connection",  # ours alone: a vendor's must not pass for connection_required
    b"content-length",
    b"content-encoding",
    b"set-cookie",
    b"date",
    b"server",
}

DECODED_CODINGS = frozenset({"gzip", "deflate", "identity"})
"""The content codings a response may arrive in: httpx decodes them before the scan."""

# Named in the refusal; any other token is "an unknown coding" (it is the vendor's text).
_KNOWN_CODINGS = frozenset(
    {"br", "zstd", "compress", "x-compress", "x-gzip", "dcb", "dcz", "aes128gcm", "exi"}
)
_OVERLAP = 2048  # bytes of the previous chunk re-checked for a declaration cut in two


def refused_coding(headers: httpx.Headers) -> str | None:
    """The first content or transfer coding the gateway would pass on undecoded, or ``None``."""
    for value in headers.get_list("content-encoding", split_commas=True):
        coding = value.strip().lower()
        if coding and coding not in DECODED_CODINGS:
            return coding
    for value in headers.get_list("transfer-encoding", split_commas=True):
        coding = value.strip().lower()
        if coding and coding != "chunked":
            return coding
    return None


def _declare_utf8(
    headers: list[tuple[bytes, bytes]], content_type: ContentType
) -> list[tuple[bytes, bytes]]:
    """``headers`` with the one Content-Type replaced by its canonical UTF-8 form."""
    result = [(name, value) for name, value in headers if name != b"content-type"]
    result.append((b"content-type", content_type.as_utf8().encode("latin-1")))
    return result


class _ToUtf8:
    """Decodes a body from its charset as it arrives and re-encodes it as UTF-8; the body's own
    charset declaration at its start is rewritten to UTF-8."""

    def __init__(self, encoding: str) -> None:
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")
        self._first = True

    def __call__(self, chunk: bytes, final: bool = False) -> bytes:
        converted = self._decoder.decode(chunk, final).encode("utf-8", "replace")
        if self._first and converted:
            self._first = False
            converted = declare_utf8_in_body(converted)
        return converted


def _as_is(chunk: bytes, final: bool = False) -> bytes:
    return chunk


class _Declarations:
    """Checks each piece of a text body for a charset declaration other than UTF-8."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self._tail = b""

    def check(self, piece: bytes) -> None:
        if self.active and piece:
            window = self._tail + piece
            check_declarations(window)
            self._tail = window[-_OVERLAP:]


class EchoScanners:
    """Compiled echo scanners for the secret sets of recent calls, least recently used dropped.

    Compiling a scanner (every encoded form of every secret, and their automaton) costs more
    than scanning a small response, and a service's calls mostly carry the same few credentials.
    Only the compiled matcher is kept: every response is still scanned in full, and which
    credential a call carries is decided live for each call. A rotated credential's scanner
    stays in memory until ``size`` other secret sets have been used since.
    """

    def __init__(self, size: int = 128) -> None:
        if size < 1:
            raise ValueError("size is at least 1")
        self.size = size
        self._compiled: OrderedDict[frozenset[str], EchoScanner] = OrderedDict()

    def __repr__(self) -> str:
        return f"EchoScanners(size={self.size}, held={len(self._compiled)})"

    def get(self, secrets: frozenset[str]) -> EchoScanner:
        """The scanner for exactly ``secrets`` (compiled now if it is not held)."""
        scanner = self._compiled.get(secrets)
        if scanner is not None:
            self._compiled.move_to_end(secrets)
            return scanner
        scanner = EchoScanner(secrets)
        self._compiled[secrets] = scanner
        if len(self._compiled) > self.size:
            self._compiled.popitem(last=False)
        return scanner


class ResponseWithheld(AgentGuardError):
    """A response failed after it had started (an echoed credential, an upstream failure).

    The stream is cut: the exception propagates to the ASGI server, which drops the connection
    so the agent sees an incomplete response rather than a silently truncated one.
    """

    def __init__(self, error: RequestRefused) -> None:
        self.error = error
        super().__init__(error.description)


class ResponseRelay:
    """Relays one upstream response for one service.

    Args:
        service: the service's name (for error bodies).
        chain: the response reviewers, if any.
        buffer_bytes: responses up to this size are scanned whole before the agent sees them.
        record: audits review findings.
        as_error: turns an upstream or scan failure into the gateway error to answer with.
        scanners: compiled echo scanners shared between calls (a fresh cache by default).
        rejected: told of a 401 to the credential sent for a principal; whether the next
            call sends another (:meth:`~agentguard.credentials.CredentialSwapper.rejected`).
    """

    def __init__(
        self,
        *,
        service: str,
        chain: ReviewChain | None,
        buffer_bytes: int,
        record: Callable[[Iterable[Verdict], ReviewContext], Awaitable[None]],
        as_error: Callable[[Exception], RequestRefused],
        scanners: EchoScanners | None = None,
        rejected: Callable[[Principal, Secret], Awaitable[bool]] | None = None,
    ) -> None:
        self.scanners = scanners if scanners is not None else EchoScanners(1)
        self.service = service
        self.chain = chain
        self.buffer_bytes = buffer_bytes
        self.record = record
        self.as_error = as_error
        self.rejected = rejected

    def check_codings(self, headers: httpx.Headers) -> None:
        """Refuse (502 naming the service) a response in a coding that is not decoded."""
        coding = refused_coding(headers)
        if coding is None:
            return
        shown = coding if coding in _KNOWN_CODINGS else "an unknown coding"
        raise BadGateway(
            self.service,
            f"{self.service}: the service answered in a coding the gateway does not decode "
            f"and scan ({shown}); refused",
            reason=Reason.UPSTREAM_PROTOCOL_ERROR,
        )

    async def relay(
        self,
        response: httpx.Response,
        credential: Secret,
        send: Send,
        context: ReviewContext,
        *,
        secrets: Iterable[Secret] = (),
    ) -> None:
        """Send the upstream response on, scanning it for ``credential`` and every other secret
        of the call (``secrets``), and reviewing it."""
        if response.status_code == 401:
            raise await self._rejected(credential, context)
        self.check_codings(response.headers)
        content_type = self._content_type(response.headers)
        scanner = self.scanners.get(
            frozenset({credential.reveal(), *(secret.reveal() for secret in secrets)})
        )
        headers = [
            (name.lower(), value)
            for name, value in response.headers.raw
            if name.lower() not in _DROPPED_RESPONSE
        ]
        scanner.check_headers(headers)
        chain = self.chain
        limit = max(self.buffer_bytes, HEAD_BYTES)
        if chain is not None and not chain.streaming:
            limit = max(limit, chain.max_bytes + 1)
        chunks = response.aiter_bytes().__aiter__()
        head, finished = await self._read_head(chunks, limit)
        encoding = self._encoding(content_type, head[:HEAD_BYTES])
        convert = _as_is if encoding is None else _ToUtf8(encoding)
        is_text = textual(content_type.media) or content_type.charset is not None
        if encoding is not None or (is_text and content_type.media):
            headers = _declare_utf8(headers, content_type)
        declarations = _Declarations(is_text)
        if finished:
            body = convert(head, True)
            self._check_declarations(declarations, body)
            await scanner.check_body_stepwise(body, anyio.lowlevel.checkpoint)
            if chain is not None:
                result = await chain.review_body(context, body)
                await self.record(result.findings, context)
                if result.blocked is not None:
                    raise blocked(Direction.OUT, result.blocked)
                body = result.body
            headers.append((b"content-length", str(len(body)).encode()))
            await send(self._start(response.status_code, headers))
            await send({"type": "http.response.body", "body": body})
            return
        stream = scanner.stream()
        converted = convert(head)
        self._check_declarations(declarations, converted)
        first = stream.feed(converted)
        await self._relay_stream(
            status=response.status_code,
            headers=headers,
            first=first,
            chunks=chunks,
            convert=convert,
            stream=stream,
            declarations=declarations,
            context=context,
            send=send,
        )

    async def _rejected(self, credential: Secret, context: ReviewContext) -> BadGateway:
        """The 502 for a credential the upstream rejected (401), once the swapper was told; the
        request is not retried (its body may not be replayable)."""
        renewed = False
        if self.rejected is not None and context.principal is not None:
            renewed = await self.rejected(context.principal, credential)
        if not renewed:
            return BadGateway(self.service, reason=Reason.UPSTREAM_REJECTED_CREDENTIAL)
        return BadGateway(
            self.service,
            f"{self.service}: the service rejected the credential it was sent; it is renewed "
            "before the next call (this request was not retried)",
            reason=Reason.UPSTREAM_REJECTED_CREDENTIAL,
        )

    def _content_type(self, headers: httpx.Headers) -> ContentType:
        """The response's one Content-Type (502 naming the service if it has no one reading)."""
        try:
            return parse_content_type(headers.get_list("content-type"))
        except AmbiguousContentType as error:
            raise self._refused(str(error)) from None

    def _encoding(self, content_type: ContentType, head: bytes) -> str | None:
        try:
            return body_encoding(content_type, head)
        except AmbiguousContentType as error:
            raise self._refused(str(error)) from None

    def _check_declarations(self, declarations: _Declarations, piece: bytes) -> None:
        try:
            declarations.check(piece)
        except AmbiguousContentType as error:
            raise self._refused(str(error)) from None

    def _refused(self, problem: str) -> BadGateway:
        return BadGateway(
            self.service,
            f"{self.service}: the service's response could be read in more than one charset"
            f" ({problem}); refused",
            reason=Reason.UPSTREAM_PROTOCOL_ERROR,
        )

    @staticmethod
    async def _read_head(chunks: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
        """The first ``limit`` bytes or more (decoded), and whether that was all of it."""
        received: list[bytes] = []
        size = 0
        while size < limit:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return b"".join(received), True
            size += len(chunk)
            received.append(chunk)
        return b"".join(received), False

    async def _relay_stream(
        self,
        *,
        status: int,
        headers: list[tuple[bytes, bytes]],
        first: bytes,
        chunks: AsyncIterator[bytes],
        convert: Callable[[bytes, bool], bytes],
        stream: StreamScanner,
        declarations: _Declarations,
        context: ReviewContext,
        send: Send,
    ) -> None:
        """Send a response too large to buffer, reviewing it chunk by chunk as it goes."""
        chain = self.chain
        review = chain.stream(context) if chain is not None else None
        started = False
        try:
            if review is not None:
                first = await review.feed(first)
            await send(self._start(status, headers))
            started = True
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in chunks:
                converted = convert(chunk, False)
                declarations.check(converted)
                safe = stream.feed(converted)
                if review is not None and safe:
                    safe = await review.feed(safe)
                if safe:
                    await send({"type": "http.response.body", "body": safe, "more_body": True})
            last = convert(b"", True)
            declarations.check(last)
            tail = (stream.feed(last) if last else b"") + stream.finish()
            if review is not None:
                tail = (await review.feed(tail) if tail else b"") + await review.finish()
        except (httpx.HTTPError, SecretEchoed) as failure:
            raise ResponseWithheld(self.as_error(failure)) from None
        except AmbiguousContentType as failure:
            raise ResponseWithheld(self._refused(str(failure))) from None
        except ReviewBlocked as refusal:
            if not started:
                raise
            raise ResponseWithheld(refusal) from None
        finally:
            if review is not None:
                await self.record(review.findings, context)
        await send({"type": "http.response.body", "body": tail})

    @staticmethod
    def _start(status: int, headers: Sequence[tuple[bytes, bytes]]) -> Message:
        return {"type": "http.response.start", "status": status, "headers": list(headers)}
