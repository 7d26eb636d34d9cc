"""The relay of one open proxied websocket: both directions, the lease, the closes.

:func:`relay` accepts the agent's side and pumps messages until one side closes, a message is
refused or the lease is cut; how the socket ended (:class:`End`) decides the close each side is
sent. See :mod:`agentguard.asgi._websocket` for what is checked and why.

Both directions are scanned as one stream, not message by message: a client that joins the
messages (a terminal, a token stream) reads what the messages hold together, so a credential
cut across messages (or across messages and the close reason) is caught when the message that
completes it arrives, and that message is never sent. Each message is scanned whole; the text
it follows is remembered only as far as a form could still begin in it
(:meth:`~agentguard.credentials.EchoScanner.holdback`; for keys of ours, the key scanner's
``window``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from agentguard.asgi._types import Receive, Send
from agentguard.credentials._echo import EchoScanner, SecretEchoed
from agentguard.credentials._keyscan import KeyScanner
from agentguard.errors import BadGateway, Reason, RequestRefused
from agentguard.review._base import Direction

if TYPE_CHECKING:
    import aiohttp

    from agentguard._passage import Passage
    from agentguard._stream_lease import StreamLease
    from agentguard.asgi._proxy import ProxyApp

__all__ = ["End", "Upstream", "relay"]

# The close codes an endpoint may send (RFC 6455 §7.4: never 1005, 1006 or 1015).
_SENDABLE = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))


@dataclass(frozen=True)
class End:
    """How a socket ends: the close sent to the agent (``None``: it is gone), the close code
    sent upstream, and the refusal to audit."""

    agent: tuple[int, str] | None
    upstream: int
    error: RequestRefused | None = None


@dataclass(repr=False)  # the scanners hold every form of the call's secrets
class Upstream:
    """The open upstream socket, the scanners for its messages, and its caller slot."""

    socket: aiohttp.ClientWebSocketResponse[bool]
    keys: KeyScanner
    echo: EchoScanner
    release: Callable[[], None]


async def relay(
    app: ProxyApp,
    passage: Passage,
    upstream: Upstream,
    lease: StreamLease,
    *,
    receive: Receive,
    send: Send,
    limit: int,
) -> End:
    """Accept, pump both ways until one side ends or the lease is cut, close both."""
    try:
        await send({"type": "websocket.accept", "subprotocol": upstream.socket.protocol})
    except OSError:  # the agent left during the handshake
        return End(None, 1001)
    pump = _Pump(app, passage, upstream, receive=receive, send=send, limit=limit)
    ends: list[End] = []
    async with anyio.create_task_group() as group:

        async def run(side: Callable[[], Awaitable[End]]) -> None:
            ends.append(await side())
            group.cancel_scope.cancel()

        group.start_soon(run, pump.from_agent)
        group.start_soon(run, pump.from_upstream)
        group.start_soon(run, lambda: _cut(lease))
    end = ends[0]
    if end.agent is not None:
        code, reason = end.agent
        with contextlib.suppress(OSError, RuntimeError):  # the agent may be gone already
            await send({"type": "websocket.close", "code": code, "reason": reason})
    await upstream.socket.close(code=end.upstream)
    return end


def _sendable(code: object, default: int) -> int:
    if isinstance(code, int) and (code in _SENDABLE or 3000 <= code <= 4999):
        return code
    return default


def _short(reason: str) -> str:
    """``reason`` cut to the 123 bytes a close frame holds."""
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")


async def _cut(lease: StreamLease) -> End:
    """The end of a socket whose lease was cut (the registry audits the cut, once)."""
    error = await lease.wait()
    return End((1008, error.reason.value), 1001)


class _Pump:
    """The two directions of one relayed socket; each returns how the socket ends."""

    def __init__(
        self,
        app: ProxyApp,
        passage: Passage,
        upstream: Upstream,
        *,
        receive: Receive,
        send: Send,
        limit: int,
    ) -> None:
        self.app = app
        self.passage = passage
        self.upstream = upstream
        self.receive = receive
        self.send = send
        self.limit = limit
        self._keys = _JoinedKeys(upstream.keys)
        self._echo = _Joined(upstream.echo)

    async def from_agent(self) -> End:
        import aiohttp

        socket = self.upstream.socket
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code")
                return End(None, _sendable(code, 1000 if code == 1005 else 1001))
            if message["type"] != "websocket.receive":
                continue
            text: str | None = message.get("text")
            data: bytes = text.encode("utf-8") if text is not None else message.get("bytes") or b""
            if len(data) > self.limit:
                return End((1009, "message too big"), 1001)
            try:
                self.upstream.keys.check(data, "websocket message")
                self._keys.check(data)  # a key cut across messages
            except RequestRefused as found:
                return End((1008, found.reason.value), 1001, found)
            data, end = await self._review(Direction.IN, data, text is not None)
            if end is not None:
                return end
            try:
                if text is not None:
                    await socket.send_str(data.decode("utf-8", "replace"))
                else:
                    await socket.send_bytes(data)
            except (OSError, aiohttp.ClientError):
                return End((1011, "upstream connection lost"), 1001)

    async def from_upstream(self) -> End:
        import aiohttp

        kinds = aiohttp.WSMsgType
        echo = self.upstream.echo
        while True:
            message = await self.upstream.socket.receive()
            if message.type is kinds.CLOSE:
                reason = message.extra or ""
                if echo.found_in(reason) or self._echo.completes(reason):
                    return self._echoed()
                code = _sendable(message.data, 1000)
                return End((code, _short(reason)), code)
            if message.type is kinds.ERROR:
                if getattr(message.data, "code", None) == 1009:
                    return End((1009, "message too big"), 1009)
                return End((1011, "upstream protocol error"), 1002)
            if message.type not in (kinds.TEXT, kinds.BINARY):  # closed without a close frame
                return End((1011, "upstream connection lost"), 1001)
            text = message.type is kinds.TEXT
            data: bytes = message.data.encode("utf-8") if text else message.data
            if len(data) > self.limit:
                return End((1009, "message too big"), 1009)
            try:
                await echo.check_body_stepwise(data, anyio.lowlevel.checkpoint)
            except SecretEchoed:
                return self._echoed()
            if self._echo.completes(message.data if text else data):
                return self._echoed()
            data, end = await self._review(Direction.OUT, data, text)
            if end is not None:
                return end
            out = {"text": data.decode("utf-8", "replace")} if text else {"bytes": data}
            try:
                await self.send({"type": "websocket.send", **out})
            except OSError:
                return End(None, 1001)

    def _echoed(self) -> End:
        error = BadGateway(self.app.service.name, reason=Reason.SECRET_ECHO_BLOCKED)
        return End((1008, error.reason.value), 1008, error)

    async def _review(
        self, direction: Direction, data: bytes, text: bool
    ) -> tuple[bytes, End | None]:
        """The message as the reviewers let it through, or how the socket ends."""
        reviews = self.app.reviews
        chain = reviews.request_chain if direction is Direction.IN else reviews.response_chain
        if chain is None:
            return data, None
        media = "text/plain; charset=utf-8" if text else "application/octet-stream"
        context = self.passage.context(direction, media)
        result = await chain.review_body(context, data)
        try:
            with anyio.CancelScope(shield=True):  # another side ending must not cut an append
                await reviews.record(result.findings, context)
        except RequestRefused as unrecorded:  # no unrecorded verdict is acted on
            return data, End((1011, unrecorded.reason.value), 1001)
        if result.blocked is not None:
            return data, End((1008, "review_blocked"), 1008 if direction is Direction.OUT else 1001)
        return result.body, None


class _Joined:
    """The upstream's messages (and close reason) read as one text: whether the next one
    completes a form of a secret that began in the ones already sent.

    Only the tail of what was sent in which a form could still begin is kept
    (:meth:`EchoScanner.holdback`, at most :attr:`EchoScanner.span` characters); a message is
    checked together with it over the first ``span`` characters a match can reach. A form
    wholly inside one message is the whole-message scan's to find.
    """

    def __init__(self, echo: EchoScanner) -> None:
        self.echo = echo
        self._tail = ""

    def completes(self, message: str | bytes) -> bool:
        span = self.echo.span
        if not span:
            return False
        head, end = _ends(message, span)
        if self._tail and self.echo.found_in(self._tail + head):
            return True
        joined = (self._tail + end)[-span:]
        self._tail = joined[len(joined) - self.echo.holdback(joined) :]
        return False


def _ends(message: str | bytes, size: int) -> tuple[str, str]:
    """The first and last ``size`` characters of ``message`` (bytes read as UTF-8, undecodable
    bytes kept as they are), without decoding the rest of a large binary message."""
    if isinstance(message, str):
        return message[:size], message[-size:]
    width = 4 * size  # a character is at most four bytes
    head = message[:width].decode("utf-8", "surrogateescape")[:size]
    end = message[-width:].decode("utf-8", "surrogateescape")[-size:]
    return head, end


class _JoinedKeys:
    """The agent's messages read as one stream: a key of ours cut across them is refused when
    the message that completes it arrives (the last ``window - 1`` bytes are kept)."""

    def __init__(self, keys: KeyScanner) -> None:
        self.keys = keys
        self._tail = b""

    def check(self, message: bytes) -> None:
        keep = self.keys.window - 1
        if self._tail:
            self.keys.check(self._tail + message[:keep], "websocket messages")
        self._tail = (self._tail + message[-keep:])[-keep:]
