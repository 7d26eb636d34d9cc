"""A host app's own streams, behind AgentGuardMiddleware, are cut like the proxy's.

Over real sockets (uvicorn): a Starlette app with a server-sent-event route, a plain streamed
route, a bounded JSON route and a websocket route, guarded by the middleware on a SQLite store.
Revoking the key (or disabling the user) while a stream is open ends it within the re-check
deadline: the SSE stream with ``event: error`` and no clean end, the websocket with 1008; the
cut is audited once. A bounded response holds no lease.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import websockets.sync.client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.config import StreamSettings
from agentguard.storage import SQLiteStore
from agentguard.testing import make_user
from tests.support.servers import LoopbackServer

DEADLINE = 10.0


async def ticks(request: Request) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for tick in range(400):  # 20 s: must not run to its end
            yield f"data: tick {tick}\n\n".encode()
            await anyio.sleep(0.05)

    return StreamingResponse(events(), media_type="text/event-stream")


async def stripped(request: Request) -> StreamingResponse:
    """Drops ``Authorization`` from the scope's own header list before it streams: the lease
    still holds the key the request was admitted with."""
    headers = request.scope["headers"]
    headers[:] = [(name, value) for name, value in headers if name != b"authorization"]
    return await ticks(request)


async def quiet(request: Request) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b"data: hello\n\n"
        await anyio.sleep(30)  # idle: only the lease can end it early
        yield b"data: late\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def lines(request: Request) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for row in range(400):
            yield f'{{"row": {row}}}\n'.encode()
            await anyio.sleep(0.05)

    return StreamingResponse(rows(), media_type="application/x-ndjson")


async def bounded(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text(text)


@dataclass
class Served:
    url: str
    guard: Guard
    store: SQLiteStore
    user_id: str
    keys: list[str]

    def key(self) -> str:
        return self.keys[-1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = SQLiteStore(tmp_path / "agentguard.db")
    guard = Guard(
        store,
        rules=[RouteRule("/", service="crm", methods={"WEBSOCKET": "read"})],
        streams=StreamSettings(recheck_interval=0.5, events="off"),
    )
    app = Starlette(
        routes=[
            Route("/events", ticks),
            Route("/stripped", stripped),
            Route("/lines", lines),
            Route("/quiet", quiet),
            Route("/bounded", bounded),
            WebSocketRoute("/socket", socket),
        ]
    )

    async def seed() -> tuple[str, list[str]]:
        user = await make_user(store, grants="crm:read")
        issued = [await guard.issuer.issue(user.id, "ws-1") for _ in range(3)]
        return user.id, [keys.access_key.reveal() for keys in issued]

    user_id, keys = anyio.run(seed)
    with LoopbackServer(AgentGuardMiddleware(app, guard)) as server:
        yield Served(server.url, guard, store, user_id, keys)


def _stream_cut(event: dict[str, object]) -> bool:
    detail = event.get("detail")
    return isinstance(detail, dict) and detail.get("stream") == "cut"


def _drain(response: httpx.Response, into: list[str]) -> None:
    for line in response.iter_lines():
        into.append(line)


def _receive_until_closed(ws: websockets.sync.client.ClientConnection) -> None:
    while True:
        ws.recv(timeout=DEADLINE)


def _revoke_soon(served: Served, key: str, after: float = 0.4) -> threading.Thread:
    """Revoke ``key`` from another thread (its own loop, like another process) after a while."""

    def revoke() -> None:
        time.sleep(after)

        async def run() -> None:
            other = SQLiteStore(served.store.path)
            try:
                assert await Guard(other).issuer.revoke_presented(key)
            finally:
                await other.close()

        anyio.run(run)

    thread = threading.Thread(target=revoke, daemon=True)
    thread.start()
    return thread


def _read_while_revoking(served: Served, path: str) -> list[str]:
    """Open ``path`` as a stream, revoke its key meanwhile; the lines read before the cut
    (which must come within the deadline, without a clean end of the body)."""
    key = served.key()
    received: list[str] = []
    started = time.monotonic()
    with (
        httpx.Client(timeout=DEADLINE) as http,
        http.stream("GET", served.url + path, headers={"authorization": f"Bearer {key}"}) as got,
    ):
        assert got.status_code == 200
        thread = _revoke_soon(served, key)
        with pytest.raises(httpx.RemoteProtocolError):  # no clean end of the body
            _drain(got, received)
    thread.join()
    assert time.monotonic() - started < DEADLINE
    return received


def test_an_sse_route_ends_with_an_error_event_once_its_key_is_revoked(served: Served) -> None:
    received = _read_while_revoking(served, "/events")
    assert "data: tick 0" in received
    assert "event: error" in received
    data = json.loads(received[received.index("event: error") + 1].removeprefix("data: "))
    assert (data["error"], data["reason"]) == ("invalid_token", "revoked")
    after = received[received.index("event: error") :]
    assert not any(line.startswith("data: tick") for line in after)


def test_a_stream_is_cut_by_revoking_its_key_though_the_app_dropped_the_header(
    served: Served,
) -> None:
    received = _read_while_revoking(served, "/stripped")
    assert "data: tick 0" in received
    assert "event: error" in received


def test_an_idle_sse_stream_is_cut_too(served: Served) -> None:
    """Nothing is being sent when the key is revoked: the cut cancels the app itself."""
    received = _read_while_revoking(served, "/quiet")
    assert received[:2] == ["data: hello", ""]
    assert "event: error" in received
    assert "data: late" not in received


def test_a_plain_stream_is_dropped_once_its_user_is_disabled(served: Served) -> None:
    key = served.key()

    def disable() -> None:
        time.sleep(0.4)

        async def run() -> None:
            other = SQLiteStore(served.store.path)
            try:
                user = await other.get_user(served.user_id)
                assert user is not None
                await other.put_user(user.model_copy(update={"enabled": False}))
            finally:
                await other.close()

        anyio.run(run)

    rows: list[str] = []
    with (
        httpx.Client(timeout=DEADLINE) as http,
        http.stream(
            "GET", served.url + "/lines", headers={"authorization": f"Bearer {key}"}
        ) as response,
    ):
        thread = threading.Thread(target=disable, daemon=True)
        thread.start()
        with pytest.raises(httpx.RemoteProtocolError):
            _drain(response, rows)
    thread.join()
    assert rows and len(rows) < 400, len(rows)
    assert all(row.startswith('{"row"') for row in rows if row)  # no error event: not SSE


def test_a_websocket_is_closed_with_1008_once_its_key_is_revoked(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="websockets")  # its debug log prints the headers
    key = served.key()
    url = served.url.replace("http://", "ws://") + "/socket"
    with websockets.sync.client.connect(
        url, additional_headers={"authorization": f"Bearer {key}"}, open_timeout=DEADLINE
    ) as ws:
        ws.send("hello")
        assert ws.recv(timeout=DEADLINE) == "hello"
        thread = _revoke_soon(served, key)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            _receive_until_closed(ws)
    thread.join()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "revoked")


def test_a_bounded_response_holds_no_lease_and_the_cut_is_audited_once(served: Served) -> None:
    key = served.key()
    with httpx.Client(timeout=DEADLINE) as http:
        response = http.get(served.url + "/bounded", headers={"authorization": f"Bearer {key}"})
        assert response.json() == {"ok": True}
        with http.stream(
            "GET", served.url + "/events", headers={"authorization": f"Bearer {key}"}
        ) as stream:
            thread = _revoke_soon(served, key)
            with pytest.raises(httpx.RemoteProtocolError):
                _drain(stream, [])
    thread.join()

    async def cuts() -> list[dict[str, object]]:
        events = [entry.event() for entry in await served.store.read()]
        return [e for e in events if _stream_cut(e)]

    deadline = time.monotonic() + DEADLINE
    found = anyio.run(cuts)
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = anyio.run(cuts)
    assert len(found) == 1, found  # the stream's cut only: the bounded response held no lease
    assert found[0]["path"] == "/events"
    assert found[0]["reason"] == "revoked"
