"""Server-sent events and other streams through the proxy, on real sockets.

A uvicorn upstream emits small events spaced in time; the ProxyApp in front is served by
uvicorn too; the agent reads with httpx streaming. Events must arrive as they are emitted (not
when the stream ends), in order and intact; an echoed key, however the chunks cut it, ends the
stream; a stream lease cut mid-stream ends it with ``event: error`` and an incomplete body.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from agentguard._stream_lease import StreamLease
from agentguard.asgi._relay import ResponseRelay
from agentguard.errors import InvalidToken
from tests.proxy.sockets import CRM_KEY, SocketGateway, socket_gateway

pytestmark = pytest.mark.anyio
Scope = dict[str, Any]

SPACING = 0.1  # seconds between the upstream's events


def event(n: int) -> bytes:
    return b'id: %d\ndata: {"n": %d, "text": "event %d"}\n\n' % (n, n, n)


@dataclass
class Upstream:
    """An upstream that streams ``parts`` (bytes, or a float: pause that long; a threading
    Event: wait for it), and notes when its client (the proxy) goes away."""

    parts: Sequence[bytes | float | threading.Event]
    content_type: bytes = b"text/event-stream"
    gone: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", self.content_type), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                if (await receive())["type"] == "http.disconnect":
                    self.gone.set()
                    group.cancel_scope.cancel()

            group.start_soon(watch)
            for part in self.parts:
                if isinstance(part, float):
                    await anyio.sleep(part)
                elif isinstance(part, threading.Event):
                    await anyio.to_thread.run_sync(part.wait, 10)
                else:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            self.finished.set()
            group.cancel_scope.cancel()


def spaced(events: int, spacing: float = SPACING) -> list[bytes | float | threading.Event]:
    parts: list[bytes | float | threading.Event] = []
    for n in range(events):
        parts += [event(n), spacing]
    return parts


class Agent:
    """Reads one streamed response and notes when each event (or byte) arrived."""

    def __init__(self) -> None:
        self.started = 0.0
        self.received = bytearray()
        self.events: list[tuple[float, bytes]] = []
        self.status = 0

    def feed(self, piece: bytes) -> None:
        self.received.extend(piece)
        while b"\n\n" in self.received[self._parsed :]:
            end = self.received.index(b"\n\n", self._parsed) + 2
            self.events.append((time.monotonic(), bytes(self.received[self._parsed : end])))
            self._parsed = end

    _parsed = 0


@asynccontextmanager
async def reading(gateway: SocketGateway, agent: Agent) -> AsyncIterator[AsyncIterator[bytes]]:
    async with httpx.AsyncClient(timeout=10) as client:
        agent.started = time.monotonic()
        async with client.stream(
            "GET", gateway.url + "/crm/events", headers={"X-Api-Key": gateway.key()}
        ) as response:
            agent.status = response.status_code
            yield response.aiter_raw()


async def read_all(gateway: SocketGateway, agent: Agent) -> None:
    async with reading(gateway, agent) as pieces:
        async for piece in pieces:
            agent.feed(piece)


async def test_events_arrive_as_they_are_emitted_in_order_and_intact() -> None:
    count = 12
    upstream = Upstream(spaced(count))
    agent = Agent()
    async with socket_gateway(serve=upstream) as gateway:
        await read_all(gateway, agent)
    ended = time.monotonic()
    assert agent.status == 200
    assert [body for _, body in agent.events] == [event(n) for n in range(count)]
    duration = ended - agent.started
    first = agent.events[0][0] - agent.started
    assert duration >= (count - 1) * SPACING
    assert first < duration / 4, (first, duration)
    # each event came about when it was emitted, not in a burst at the end
    gaps = [b[0] - a[0] for a, b in zip(agent.events, agent.events[1:], strict=False)]
    assert sum(gap > SPACING / 2 for gap in gaps) >= count // 2, gaps


async def test_the_first_event_reaches_the_agent_while_the_upstream_still_waits() -> None:
    gate = threading.Event()
    upstream = Upstream([event(0), gate, event(1)])
    agent = Agent()
    async with socket_gateway(serve=upstream) as gateway:
        async with reading(gateway, agent) as pieces:
            async for piece in pieces:
                agent.feed(piece)
                if agent.events and not gate.is_set():
                    gate.set()  # only now may the upstream go on: the first event came alone
        assert gate.is_set()
    assert [body for _, body in agent.events] == [event(0), event(1)]


async def test_a_plain_stream_of_small_chunks_flows_before_it_ends() -> None:
    gate = threading.Event()
    lines = [b'{"row": %d}\n' % n for n in range(3)]
    upstream = Upstream([*lines, gate, b'{"row": 3}\n'], content_type=b"application/x-ndjson")
    agent = Agent()
    async with socket_gateway(serve=upstream) as gateway:
        async with reading(gateway, agent) as pieces:
            async for piece in pieces:
                agent.feed(piece)
                if agent.received == b"".join(lines):
                    gate.set()
        assert gate.is_set()
    assert agent.received == b"".join(lines) + b'{"row": 3}\n'


def _split(data: bytes, parts: int) -> list[bytes]:
    size = -(-len(data) // parts)
    return [data[i : i + size] for i in range(0, len(data), size)]


ECHOES = {
    "raw": CRM_KEY.encode(),
    "base64": base64.b64encode(CRM_KEY.encode()),
    "json-escaped": json.dumps(CRM_KEY).encode()[1:-1].replace(b"-", b"\\u002d"),
    "hex": CRM_KEY.encode().hex().encode(),
}


@pytest.mark.parametrize("form", sorted(ECHOES))
async def test_a_key_echoed_across_chunk_boundaries_cuts_the_sse_stream(form: str) -> None:
    echo = b'data: {"error": "bad key ' + ECHOES[form] + b'"}\n\n'
    parts: list[bytes | float | threading.Event] = [event(0), SPACING, event(1), SPACING]
    for piece in _split(echo, 4):  # the key is cut in three places, each piece its own chunk
        parts += [piece, 0.05]
    upstream = Upstream([*parts, event(2)])
    agent = Agent()
    async with socket_gateway(serve=upstream) as gateway:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await read_all(gateway, agent)
        assert upstream.gone.wait(5)
    assert agent.status == 200
    bodies = [body for _, body in agent.events]
    assert bodies[:2] == [event(0), event(1)]
    assert bodies[2].startswith(b"event: error\ndata: ")
    error = json.loads(bodies[2].split(b"data: ", 1)[1])
    assert error["reason"] == "secret_echo_blocked"
    assert len(bodies) == 3
    assert agent.received == b"".join(bodies)  # nothing after the error event
    for secret_form in (CRM_KEY[:12], CRM_KEY[-12:]):
        assert secret_form.encode() not in agent.received


class LeaseTap:
    """Gives each relay of the gateway a lease made in the server's loop; a test cuts it from
    its own thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lease: StreamLease | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        original = ResponseRelay.relay
        tap = self

        async def relay(self: ResponseRelay, *args: Any, **kwargs: Any) -> None:
            tap.loop = asyncio.get_running_loop()
            tap.lease = kwargs["lease"] = StreamLease("key", "user-1", "ws-1", "acct-1")
            await original(self, *args, **kwargs)

        monkeypatch.setattr(ResponseRelay, "relay", relay)

    def cut(self, error: InvalidToken) -> None:
        assert self.loop is not None and self.lease is not None
        self.loop.call_soon_threadsafe(self.lease.cut, error)


async def test_a_lease_cut_mid_stream_sends_an_error_event_then_an_incomplete_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tap = LeaseTap(monkeypatch)
    upstream = Upstream(spaced(100, 0.05))  # five seconds of events unless cut
    agent = Agent()
    revoked = InvalidToken("the access key was revoked")
    async with socket_gateway(serve=upstream) as gateway:

        async def read_and_cut() -> None:
            async with reading(gateway, agent) as pieces:
                async for piece in pieces:
                    agent.feed(piece)
                    if len(agent.events) == 3 and tap.lease is not None and not tap.lease.is_cut:
                        tap.cut(revoked)

        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            await read_and_cut()
        assert upstream.gone.wait(5)  # the proxy closed its upstream connection
        assert not upstream.finished.is_set()
    bodies = [body for _, body in agent.events]
    last = bodies[-1]
    assert bodies[:-1] == [event(n) for n in range(len(bodies) - 1)]
    assert last.startswith(b"event: error\ndata: ")
    assert json.loads(last.split(b"data: ", 1)[1]) == {
        "error": "invalid_token",
        "error_description": "the access key was revoked",
        "reason": revoked.reason.value,
    }
    assert agent.received.endswith(last)
