"""Sending an upstream response on to the agent: decoded, echo-scanned, reviewed, buffered or
streamed.

What the agent reads is what was scanned:

- **Codings.** The proxy asks upstream for gzip and deflate only
  (:data:`~agentguard.credentials.placement.UPSTREAM_ACCEPT_ENCODING`), which httpx decodes.
  A response in any other content coding (``br``, ``zstd``, ``compress``, an unknown token,
  also stacked after a known one), or with a transfer coding other than ``chunked``, is
  refused with a 502 naming the service: httpx passes codings it does not know through
  undecoded, and the scanner would see compressed bytes while the agent decompresses the key.
- **Charsets.** A text body declared in another charset, or starting with a UTF-16/UTF-32
  byte-order mark (JSON without a charset is sniffed as ``json.loads`` does), is decoded and
  sent on as UTF-8 with ``charset=utf-8``: the scanner and the reviewers read the characters
  the agent will read.
- **Echo scan.** Every secret of the call (the credential sent and, for a minted token, the
  admin credential it came from) is looked for in every header name and value and in the body,
  in every form and view of :class:`~agentguard.credentials.echo.EchoScanner`.

Responses that fit in the first ``buffer_bytes`` are scanned whole before anything is sent, so
an echo becomes a clean 502; larger ones stream through a scanner that holds back just enough
bytes to see across chunk boundaries, and a stream that turns out to echo a credential is cut
off mid-way.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import httpx

from agentguard.asgi.types import Message, Send
from agentguard.credentials.echo import EchoScanner, SecretEchoed, StreamScanner
from agentguard.credentials.placement import HOP_BY_HOP
from agentguard.errors import AgentGuardError, BadGateway, Reason
from agentguard.review.base import Direction, ReviewContext, Verdict
from agentguard.review.chain import ReviewChain
from agentguard.review.errors import ReviewBlocked, blocked
from agentguard.secret import Secret

__all__ = ["DECODED_CODINGS", "ResponseRelay", "ResponseWithheld", "refused_coding"]

# The gateway's own server sets Date and Server; the upstream's would arrive twice.
_DROPPED_RESPONSE = HOP_BY_HOP | {
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
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_TEXT_SUFFIXES = (
    "/json",
    "+json",
    "/xml",
    "+xml",
    "/javascript",
    "/ecmascript",
    "/x-www-form-urlencoded",
    "/x-ndjson",
    "/jsonl",
    "/yaml",
    "/x-yaml",
)
_HEAD = 4  # bytes needed to recognise a byte-order mark or sniff JSON's encoding


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


def _media_and_charset(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    media, *parameters = content_type.split(";")
    charset = None
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').strip()
    return media.strip().lower(), charset


def _text_codec(charset: str) -> str | None:
    """Python's name for a text encoding, or ``None`` (unknown, or a bytes-to-bytes codec)."""
    try:
        name = codecs.lookup(charset).name
        b"".decode(name)
    except (LookupError, ValueError):
        return None
    return name


def _textual(media: str) -> bool:
    return not media or media.startswith("text/") or media.endswith(_TEXT_SUFFIXES)


def source_encoding(content_type: str | None, head: bytes) -> str | None:
    """The encoding to turn into UTF-8 before the scan, or ``None`` to pass the body as is.

    A byte-order mark wins (as in browsers and ``json.loads``); then a declared charset that
    Python knows; then, for JSON without a charset, the encoding ``json.loads`` would detect.
    """
    media, charset = _media_and_charset(content_type)
    found: str | None = None
    if _textual(media) or charset is not None:
        found = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if found is None and charset is not None:
        found = _text_codec(charset)
    json_media = media == "application/json" or media.endswith("+json")
    if found is None and json_media and len(head) >= 2:
        found = json.detect_encoding(head)
    if found is None or found in ("utf-8", "ascii"):
        return None
    return found


def _declare_utf8(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    result = []
    for name, given in headers:
        value = given
        if name == b"content-type":
            media, *parameters = given.decode("latin-1").split(";")
            kept = [
                p.strip() for p in parameters if p.partition("=")[0].strip().lower() != "charset"
            ]
            value = "; ".join([media.strip(), *kept, "charset=utf-8"]).encode("latin-1")
        result.append((name, value))
    if not any(name == b"content-type" for name, _ in result):
        result.append((b"content-type", b"text/plain; charset=utf-8"))
    return result


class _ToUtf8:
    """Decodes a body from its charset as it arrives and re-encodes it as UTF-8."""

    def __init__(self, encoding: str) -> None:
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")

    def __call__(self, chunk: bytes, final: bool = False) -> bytes:
        return self._decoder.decode(chunk, final).encode("utf-8", "replace")


def _as_is(chunk: bytes, final: bool = False) -> bytes:
    return chunk


class ResponseWithheld(Exception):
    """A response failed after it had started (an echoed credential, an upstream failure).

    The stream is cut: the exception propagates to the ASGI server, which drops the connection
    so the agent sees an incomplete response rather than a silently truncated one.
    """

    def __init__(self, error: AgentGuardError) -> None:
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
    """

    def __init__(
        self,
        *,
        service: str,
        chain: ReviewChain | None,
        buffer_bytes: int,
        record: Callable[[Iterable[Verdict], ReviewContext], Awaitable[None]],
        as_error: Callable[[Exception], AgentGuardError],
    ) -> None:
        self.service = service
        self.chain = chain
        self.buffer_bytes = buffer_bytes
        self.record = record
        self.as_error = as_error

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
            raise BadGateway(self.service, reason=Reason.UPSTREAM_REJECTED_CREDENTIAL)
        self.check_codings(response.headers)
        scanner = EchoScanner({credential.reveal(), *(secret.reveal() for secret in secrets)})
        headers = [
            (name.lower(), value)
            for name, value in response.headers.raw
            if name.lower() not in _DROPPED_RESPONSE
        ]
        scanner.check_headers(headers)
        chain = self.chain
        limit = max(self.buffer_bytes, _HEAD)
        if chain is not None and not chain.streaming:
            limit = max(limit, chain.max_bytes + 1)
        chunks = response.aiter_bytes().__aiter__()
        head, finished = await self._read_head(chunks, limit)
        encoding = source_encoding(response.headers.get("content-type"), head[:_HEAD])
        convert = _as_is if encoding is None else _ToUtf8(encoding)
        if encoding is not None:
            headers = _declare_utf8(headers)
        if finished:
            body = convert(head, True)
            scanner.check_body(body)
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
        first = stream.feed(convert(head))
        await self._relay_stream(
            status=response.status_code,
            headers=headers,
            first=first,
            chunks=chunks,
            convert=convert,
            stream=stream,
            context=context,
            send=send,
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
                safe = stream.feed(convert(chunk, False))
                if review is not None and safe:
                    safe = await review.feed(safe)
                if safe:
                    await send({"type": "http.response.body", "body": safe, "more_body": True})
            last = convert(b"", True)
            tail = (stream.feed(last) if last else b"") + stream.finish()
            if review is not None:
                tail = (await review.feed(tail) if tail else b"") + await review.finish()
        except (httpx.HTTPError, SecretEchoed) as failure:
            raise ResponseWithheld(self.as_error(failure)) from None
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
