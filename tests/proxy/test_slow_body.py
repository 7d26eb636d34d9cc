"""A slow upload must not hold the service for everyone: two users, over real sockets.

``user-1`` opens more trickling uploads than the service has upstream connections (a byte per
tick under a large ``Content-Length``, chunked one-byte chunks, a stall after a few bytes,
headers only); meanwhile ``user-2``'s plain GET and small POST through the same service must be
answered 200, and every trickler must get 408 once its idle or total deadline passes. The pool
timeout is short, so a starved pool would show as a 504 for ``user-2``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
import pytest

from agentguard import ServiceTimeouts
from tests.proxy.sockets import SocketGateway, fake_crm, socket_gateway

pytestmark = pytest.mark.anyio

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
IDLE, TOTAL = 0.5, 1.5
TIMEOUTS = ServiceTimeouts(connect=2, read=5, write=5, pool=1.0, body_idle=IDLE, body_total=TOTAL)
STYLES = ("steady", "chunked", "stall", "headers-only")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class CountingUpstream:
    """The fake CRM, counting requests whose headers arrived (before their body)."""

    def __init__(self) -> None:
        self.fake = fake_crm()
        self.started = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.started += 1
        await self.fake(scope, receive, send)


def _head(key: str, style: str) -> bytes:
    framing = "Transfer-Encoding: chunked" if style == "chunked" else "Content-Length: 1000000"
    return (
        f"POST /crm/items HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\n"
        f"Content-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    ).encode()


async def _pieces(style: str) -> AsyncIterator[bytes]:
    """What the trickler sends after the head, paced at a tenth of a second, bounded."""
    for tick in range(200):
        if style == "headers-only" or (style == "stall" and tick >= 3):
            return
        yield b"1\r\nx\r\n" if style == "chunked" else b"x"
        await anyio.sleep(0.1)


async def trickle(port: int, key: str, style: str) -> int:
    """One slow upload; returns the status the gateway finally answered."""
    received = b""
    with anyio.fail_after(TOTAL + 8):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(_head(key, style))
            async with anyio.create_task_group() as group:

                async def feed() -> None:
                    async for piece in _pieces(style):
                        try:
                            await stream.send(piece)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                            return

                group.start_soon(feed)
                while not STATUS.match(received):
                    try:
                        received += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        break
                group.cancel_scope.cancel()
    found = STATUS.match(received)
    assert found is not None, received[:200]
    return int(found.group(1))


async def _wait_for_holders(upstream: CountingUpstream, count: int) -> None:
    """Until ``count`` uploads reached the upstream (never, once bodies are buffered), bounded."""
    with anyio.move_on_after(0.8):
        while upstream.started < count:  # noqa: ASYNC110 - polls a counter in another thread
            await anyio.sleep(0.02)


async def _other_user(gateway: SocketGateway) -> list[int]:
    headers = {"X-Api-Key": gateway.key(1)}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        with anyio.fail_after(4):  # generous: a starved pool answers 504 after 1 s
            got = await client.get("/crm/contacts", headers=headers)
            posted = await client.post("/crm/contacts", headers=headers, content=b'{"a":1}')
    return [got.status_code, posted.status_code]


async def test_trickling_uploads_do_not_stall_another_user() -> None:
    upstream = CountingUpstream()
    uploads = 2 * len(STYLES)
    options: dict[str, Any] = {"timeouts": TIMEOUTS, "max_connections": 2}
    async with socket_gateway(upstream.fake, serve=upstream, **options) as gateway:
        results: list[int] = []
        async with anyio.create_task_group() as group:

            async def one(style: str) -> None:
                results.append(await trickle(gateway.port, gateway.key(0), style))

            for index in range(uploads):
                group.start_soon(one, STYLES[index % len(STYLES)])
            await _wait_for_holders(upstream, 2)
            assert await _other_user(gateway) == [200, 200]
        assert sorted(results) == [408] * uploads
        assert [request.method for request in gateway.crm.requests] == ["GET", "POST"]


async def test_streamed_uploads_hold_at_most_one_callers_share() -> None:
    """Without a body cap the body streams upstream as it arrives, so each trickle holds a
    pooled connection: one user gets at most its share (half the pool here), 429 beyond it."""
    upstream = CountingUpstream()
    options: dict[str, Any] = {"timeouts": TIMEOUTS, "max_connections": 4}
    async with socket_gateway(
        upstream.fake, serve=upstream, max_request_bytes=None, **options
    ) as gateway:
        assert gateway.proxy.service.max_request_bytes is None
        results: list[int] = []
        async with anyio.create_task_group() as group:

            async def one() -> None:
                results.append(await trickle(gateway.port, gateway.key(0), "steady"))

            for _ in range(6):
                group.start_soon(one)
            await _wait_for_holders(upstream, 2)
            assert await _other_user(gateway) == [200, 200]
        assert sorted(results) == [408, 408, 429, 429, 429, 429]
        assert upstream.started == 4  # two trickles, then user-2's GET and POST
