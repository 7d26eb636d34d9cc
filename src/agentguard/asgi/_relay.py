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

Buffered or streamed: a response is *known small* when it declares a ``Content-Length`` of at
most ``buffer_bytes`` and is not ``text/event-stream``; it is read (up to ``buffer_bytes``
decoded) and scanned whole before anything is sent, so an echo becomes a clean 502. Any other
response (server-sent events, no length, a larger one) is streamed at once: its first chunk
is scanned before the status is sent (an echo there is still a clean 502), then every chunk is
sent on as it arrives through a scanner that holds back only what could begin a form of a
secret (:mod:`agentguard.asgi._relay_stream`); a stream that turns out to echo a credential is
cut off mid-way. A response chain with a reviewer that needs whole bodies buffers up to its
cap whatever the response.

A stream's lease (``relay(..., lease=...)``) is raced against the whole relay: cut before the
response starts, the relay raises the lease's refusal (nothing was sent, the caller answers
with it); cut after, it raises :class:`~agentguard.asgi._relay_stream.StreamCut` (an SSE stream
first gets an ``event: error``). The upstream response is closed either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import anyio.lowlevel
import httpx

from agentguard._body_charset import HEAD_BYTES, body_encoding, textual
from agentguard._content_type import AmbiguousContentType, ContentType, parse_content_type
from agentguard._model import Principal
from agentguard._secret import Secret
from agentguard._stream_lease import StreamLease
from agentguard.asgi._relay_charset import Declarations, ToUtf8, as_is, declare_utf8
from agentguard.asgi._relay_stream import (
    EVENT_STREAM,
    ResponseWithheld,
    SseFraming,
    StreamCut,
    Streamed,
    StreamPump,
    _Interrupted,
    lease_error,
    until_cut,
)
from agentguard.asgi._types import Message, Send
from agentguard.credentials._echo import EchoScanner, EchoScanners, SecretEchoed
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
    "StreamCut",
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
# What a streamed response's first read waits for: a byte-order mark, JSON's NUL sniffing and
# XML's families without a mark need four bytes; a declaration later on is checked as it comes.
_SNIFF_BYTES = 4


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


@dataclass(frozen=True)
class _Buffered:
    """A whole response, scanned and reviewed, ready to send."""

    headers: list[tuple[bytes, bytes]]
    body: bytes


def _declared_length(headers: httpx.Headers) -> int | None:
    """The one ``Content-Length`` the upstream declared, or ``None``."""
    values = headers.get_list("content-length")
    if len(values) != 1 or not values[0].strip().isascii() or not values[0].strip().isdigit():
        return None
    return int(values[0])


class ResponseRelay:
    """Relays one upstream response for one service.

    Args:
        service: the service's name (for error bodies).
        chain: the response reviewers, if any.
        buffer_bytes: responses declaring a ``Content-Length`` up to this size, or up to 1 KiB
            whatever it is (not event streams), are scanned whole before the agent sees them;
            the longest piece of an event an SSE stream waits for before sending it as it comes.
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
        lease: StreamLease | None = None,
    ) -> None:
        """Send the upstream response on, scanning it for ``credential`` and every other secret
        of the call (``secrets``), and reviewing it.

        ``lease``: the stream's lease, raced against the relay. Cut before anything was sent,
        the relay raises (a copy of) the lease's :class:`~agentguard.errors.RequestRefused`,
        for the caller to answer with; cut once the response has started, it raises
        :class:`~agentguard.asgi._relay_stream.StreamCut` (``error`` is the lease's refusal)
        after an SSE stream's ``event: error``, and the connection must close without a clean
        end (let it propagate to the server). Either way the upstream response is closed.
        """
        if lease is not None and lease.is_cut:
            raise await self._cut_early(response, lease)
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
        try:
            prepared = await until_cut(
                lease,
                lambda: self._prepare(
                    response, scanner, content_type, headers, context=context, send=send
                ),
            )
        except _Interrupted:
            raise await self._cut_early(response, lease) from None
        if isinstance(prepared, Streamed):
            await self._stream(prepared, response, context, lease)
            return
        if lease is not None and lease.is_cut:  # reviewed whole while the lease was cut
            raise await self._cut_early(response, lease)
        await send(self._start(response.status_code, prepared.headers))
        await send({"type": "http.response.body", "body": prepared.body})

    def streams_at_once(self, headers: httpx.Headers, content_type: ContentType) -> bool:
        """Whether a response is streamed from its first chunk rather than read (up to
        ``buffer_bytes``) first: server-sent events, and any response not declared small."""
        if self.chain is not None and not self.chain.streaming:
            return False  # a reviewer needs whole bodies: buffered up to the chain's cap anyway
        if content_type.media == EVENT_STREAM:
            return True
        length = _declared_length(headers)
        # a body declared within the charset prescan (1 KiB) is read whole whatever the setting
        return length is None or length > max(self.buffer_bytes, HEAD_BYTES)

    async def _prepare(
        self,
        response: httpx.Response,
        scanner: EchoScanner,
        content_type: ContentType,
        headers: list[tuple[bytes, bytes]],
        *,
        context: ReviewContext,
        send: Send,
    ) -> _Buffered | Streamed:
        """Read the head of the body; the whole response if it ended there (scanned and
        reviewed), else the pump to stream it with."""
        chain = self.chain
        if self.streams_at_once(response.headers, content_type):
            limit = _SNIFF_BYTES
        else:
            limit = max(self.buffer_bytes, HEAD_BYTES)
            if chain is not None and not chain.streaming:
                limit = max(limit, chain.max_bytes + 1)
        chunks = response.aiter_bytes().__aiter__()
        head, finished = await self._read_head(chunks, limit)
        encoding = self._encoding(content_type, head[:HEAD_BYTES])
        convert = as_is if encoding is None else ToUtf8(encoding)
        is_text = textual(content_type.media) or content_type.charset is not None
        if encoding is not None or (is_text and content_type.media):
            headers = declare_utf8(headers, content_type)
        declarations = Declarations(is_text)
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
            return _Buffered(headers, body)
        stream = scanner.stream()
        converted = convert(head)
        self._check_declarations(declarations, converted)
        first = stream.feed(converted)

        def feed(chunk: bytes, final: bool) -> bytes:
            converted = convert(chunk, final)
            declarations.check(converted)
            if not final:
                return stream.feed(converted)
            return (stream.feed(converted) if converted else b"") + stream.finish()

        framing = (
            SseFraming(self.buffer_bytes, check=scanner.check_body)
            if content_type.media == EVENT_STREAM
            else None
        )
        pump = StreamPump(
            send=send,
            status=response.status_code,
            headers=headers,
            feed=feed,
            review=chain.stream(context) if chain is not None else None,
            framing=framing,
        )
        return Streamed(pump, first, chunks)

    async def _stream(
        self,
        streamed: Streamed,
        response: httpx.Response,
        context: ReviewContext,
        lease: StreamLease | None,
    ) -> None:
        """Run the pump, racing ``lease``; turn a failure after the start into a cut."""
        pump = streamed.pump
        try:
            await until_cut(lease, lambda: pump.run(streamed.first, streamed.chunks))
        except _Interrupted:
            if not pump.started:
                raise await self._cut_early(response, lease) from None
            error = lease_error(lease)
            await response.aclose()
            raise StreamCut(error, error_event=await pump.error_event(error)) from None
        except (httpx.HTTPError, SecretEchoed) as failure:
            raise await self._withheld(pump, self.as_error(failure)) from None
        except AmbiguousContentType as failure:
            raise await self._withheld(pump, self._refused(str(failure))) from None
        except ReviewBlocked as refusal:
            if not pump.started:
                raise
            raise await self._withheld(pump, refusal) from None
        finally:
            if pump.review is not None:
                await self.record(pump.review.findings, context)

    @staticmethod
    async def _withheld(pump: StreamPump, error: RequestRefused) -> AgentGuardError:
        """The cut for a stream that failed after it started (an SSE stream is told why); the
        refusal itself before (nothing was sent: the caller answers with it)."""
        if not pump.started:
            return error
        await pump.error_event(error)
        return ResponseWithheld(error)

    @staticmethod
    async def _cut_early(response: httpx.Response, lease: StreamLease | None) -> RequestRefused:
        """The lease's refusal, for a lease cut before anything was sent; upstream closed."""
        error = lease_error(lease)
        await response.aclose()
        return error.with_context()

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

    def _check_declarations(self, declarations: Declarations, piece: bytes) -> None:
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

    @staticmethod
    def _start(status: int, headers: Sequence[tuple[bytes, bytes]]) -> Message:
        return {"type": "http.response.start", "status": status, "headers": list(headers)}
