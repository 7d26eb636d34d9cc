"""Streaming an upstream response on to the agent chunk by chunk, and cutting it.

:class:`StreamPump` sends each chunk as it arrives (one ASGI body message per chunk, which
the server writes at once), after the echo scan (:class:`~agentguard.credentials.StreamScanner`
holds back only bytes that could begin a form of a secret) and the streaming reviewers.

A server-sent-event stream (``text/event-stream``) is also sent event by event
(:class:`SseFraming`): what would end in the middle of an event waits for the event's end (a
client acts on whole events only), up to the relay's ``buffer_bytes``, after which it is sent
as it comes. So the stream, when cut, can end with one well-formed ``event: error`` whose data
is the refusal's JSON body (``error``, ``error_description``, ``reason``), which an SSE client
dispatches like any event.

A stream is *cut* (an echoed credential, an upstream failure, a reviewer's block, or its
:class:`~agentguard._stream_lease.StreamLease` cut, raced by :func:`until_cut`): the relay
raises :class:`ResponseWithheld` (for a lease, :class:`StreamCut`) and the ASGI server, seeing
the application fail after the response started, closes the connection without the
terminating chunk: the agent reads an incomplete body, never a clean end.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from agentguard._stream_lease import StreamLease
from agentguard.asgi._types import Send
from agentguard.errors import AgentGuardError, RequestRefused
from agentguard.review._stream import ChainStream

__all__ = [
    "EVENT_STREAM",
    "ResponseWithheld",
    "SseFraming",
    "StreamCut",
    "StreamPump",
    "Streamed",
    "error_event",
    "lease_error",
    "until_cut",
]

EVENT_STREAM = "text/event-stream"

_T = TypeVar("_T")
# A blank line ends an event (WHATWG HTML, "Parsing an event stream"): two line ends, CRLF
# being one (atomic groups: "\r\n" alone is one line end, not two).
_EVENT_END = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")


class ResponseWithheld(AgentGuardError):
    """A response failed after it had started (an echoed credential, an upstream failure).

    The stream is cut: the exception propagates to the ASGI server, which drops the connection
    so the agent sees an incomplete response rather than a silently truncated one (its log line
    is quieted to one warning by :func:`~agentguard._redaction.install_log_redaction`).
    """

    agentguard_stream_cut = True

    def __init__(self, error: RequestRefused) -> None:
        self.error = error
        super().__init__(error.description)


class StreamCut(ResponseWithheld):
    """The stream's lease was cut after the response had started: ``error`` is the lease's
    refusal (what a new request would get). ``error_event`` says whether an SSE stream ended
    with an ``event: error`` carrying it (not when the cut fell inside an event longer than
    the relay waits for)."""

    def __init__(self, error: RequestRefused, *, error_event: bool = False) -> None:
        super().__init__(error)
        self.error_event = error_event


class _Interrupted(AgentGuardError):
    """The lease was cut while :func:`until_cut`'s work ran (internal control flow)."""


async def until_cut(lease: StreamLease | None, work: Callable[[], Awaitable[_T]]) -> _T:
    """``await work()``, cancelled when ``lease`` is cut first (then :class:`_Interrupted`).

    The cut cancels the work's scope from the cutting task (:meth:`StreamLease.on_cut`): no
    watcher task, no task group (those cost about 125 µs a response, measured).
    """
    if lease is None:
        return await work()
    if lease.is_cut:
        raise _Interrupted
    scope = anyio.CancelScope()
    lease.on_cut(scope.cancel)
    done: list[_T] = []
    failure: Exception | None = None
    try:
        with scope:
            done.append(await work())
    except Exception as error:  # re-raised below, unless the cut is why the work failed
        failure = error
    finally:
        lease.off_cut(scope.cancel)
    if scope.cancel_called and not done:  # cut: whatever the cancelled work raised
        raise _Interrupted
    if failure is not None:
        raise failure
    return done[0]


@dataclass(frozen=True)
class Streamed:
    """A response to stream: its first bytes (scanned) and the upstream's other chunks."""

    pump: StreamPump
    first: bytes
    chunks: AsyncIterator[bytes]


def lease_error(lease: StreamLease | None) -> RequestRefused:
    """Why ``lease`` was cut (only called once it was)."""
    error = None if lease is None else lease.error
    if error is None:  # pragma: no cover - only a cut lease interrupts
        raise RuntimeError("a relay was interrupted without a cut lease")
    return error


def error_event(error: RequestRefused) -> bytes:
    """The last event of a cut SSE stream: ``event: error`` and the refusal's JSON body."""
    data = json.dumps(error.body(), separators=(",", ":"), ensure_ascii=True)
    return f"event: error\ndata: {data}\n\n".encode("ascii")


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def event_data(event: bytes) -> bytes:
    """What an EventSource hands its reader for one event: the values of its ``data`` lines
    (one leading space dropped), joined with a line feed (the WHATWG parsing rules)."""
    values: list[bytes] = []
    for line in _LINE_BREAK.split(event):
        field, colon, value = line.partition(b":")
        if field == b"data":
            values.append(value[1:] if colon and value.startswith(b" ") else value)
    return b"\n".join(values)


class SseFraming:
    """Holds back what would end a send in the middle of an event, up to ``limit`` bytes.

    ``check`` (the echo scan) is also given each released event's data as a reader joins it:
    a credential cut across several ``data:`` lines is whole only there.
    """

    def __init__(self, limit: int, check: Callable[[bytes], None] | None = None) -> None:
        self.limit = limit
        self.check = check
        self.aligned = True  # what was sent ends where an event ends (or nothing was sent)
        self._pending = b""

    def take(self, data: bytes) -> bytes:
        """The bytes to send now: up to the last event end (all of them past ``limit``)."""
        if not data:
            return b""
        pending = self._pending + data
        end = 0
        # What was pending holds no event end; one may begin in its last three bytes.
        for found in _EVENT_END.finditer(pending, max(0, len(self._pending) - 3)):
            end = found.end()
        if len(pending) - end > self.limit:  # an event longer than waited for: as it comes
            self._pending = b""
            self.aligned = False
            return pending
        released = pending[:end]
        if self.check is not None and released.count(b"data") > 1:
            for event in _EVENT_END.split(released):
                if event.count(b"data") > 1:  # one data line is scanned as it is on the wire
                    self.check(event_data(event))
        self._pending = pending[end:]
        if end:
            self.aligned = True
        return released

    def rest(self) -> bytes:
        """What is still held, once the stream has ended cleanly (an incomplete event, which a
        reader discards)."""
        rest, self._pending = self._pending, b""
        return rest


class StreamPump:
    """Sends one streamed response: the start once the first bytes are cleared, then each chunk.

    ``feed`` is the decode-and-scan step for one upstream chunk (``final`` once it ended);
    ``review`` the streaming review, if any. :attr:`started` says whether the response start
    was sent; :attr:`framing` (SSE streams) whether the output ends at an event's end.
    """

    def __init__(
        self,
        *,
        send: Send,
        status: int,
        headers: list[tuple[bytes, bytes]],
        feed: Callable[[bytes, bool], bytes],
        review: ChainStream | None,
        framing: SseFraming | None,
    ) -> None:
        self.send = send
        self.status = status
        self.headers = headers
        self.feed = feed
        self.review = review
        self.framing = framing
        self.started = False

    async def run(self, first: bytes, chunks: AsyncIterator[bytes]) -> None:
        """Send ``first`` (already scanned) and every chunk after it, then the clean end."""
        if self.review is not None:
            first = await self.review.feed(first)
        await self._start()
        await self._send(self._framed(first))  # the headers go out now, whatever follows
        async for chunk in chunks:
            data = self._framed(await self._reviewed(self.feed(chunk, False)))
            if data:
                await self._send(data)
        tail = await self._reviewed(self.feed(b"", True))
        if self.review is not None:
            tail += await self.review.finish()
        tail = self._framed(tail)
        if self.framing is not None:
            tail += self.framing.rest()
        await self.send({"type": "http.response.body", "body": tail})

    async def error_event(self, error: RequestRefused) -> bool:
        """Send the SSE ``event: error`` for a cut, if the stream can still frame one."""
        if self.framing is None or not self.framing.aligned or not self.started:
            return False
        await self._send(error_event(error))
        return True

    async def _reviewed(self, data: bytes) -> bytes:
        if self.review is not None and data:
            return await self.review.feed(data)
        return data

    async def _start(self) -> None:
        if not self.started:
            self.started = True
            await self.send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )

    def _framed(self, data: bytes) -> bytes:
        return data if self.framing is None else self.framing.take(data)

    async def _send(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})
