"""Held calls in every adapter but the proxy: the ASGI middleware (http and websocket), the WSGI
middleware on a real socket, and the FastAPI and Flask decorator paths.

The app behind each counts the calls that reached it: a held call must never be one of them.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from werkzeug.serving import make_server

from agentguard import RouteRule
from agentguard._request import GuardRequest
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._types import Message
from agentguard.errors import ServiceUnavailable
from agentguard.integrations.fastapi import install, require
from agentguard.integrations.flask import AgentGuard
from agentguard.storage import MemoryStore
from agentguard.wsgi import AgentGuardWSGIMiddleware
from tests.gates.support import World, approve, build_world, held_and_approved, hold, refusal

pytestmark = pytest.mark.anyio


async def test_middleware_holds_calls_with_and_without_a_body(world: World) -> None:
    async with world.client() as client:
        for method, body in (("POST", b"a"), ("DELETE", b""), ("PUT", b"b"), ("PATCH", b"")):
            await hold(client, world.alice, method, "/crm/t", body)
        response = await client.post("/crm/t", headers=world.alice.auth(), content=b"z" * 4097)
        assert response.status_code == 413, response.text
        assert world.recorder.calls == []
        approval_id = await held_and_approved(world, client, "DELETE", "/crm/t/1")
        assert (
            await client.delete("/crm/t/1", headers=world.alice.auth(approval_id))
        ).status_code == 200
    assert [(c.method, c.body) for c in world.recorder.calls] == [("DELETE", b"")]


async def _websocket(world: World, extensions: dict[str, Any]) -> list[Message]:
    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/crm/live",
        "raw_path": b"/crm/live", "query_string": b"", "root_path": "", "extensions": extensions,
        "headers": [(b"host", b"gw.test"),
                    (b"authorization", f"Bearer {world.alice.key}".encode())],
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await AgentGuardMiddleware(world.recorder, world.guard)(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    "extensions", [{}, {"websocket.http.response": {}}], ids=["close", "denial"]
)
async def test_a_websocket_handshake_to_a_held_route_is_refused(
    world: World, extensions: dict[str, Any]
) -> None:
    world.guard = world.rebuilt([RouteRule("/crm", "crm", approval=True)])  # GET held too
    sent = await _websocket(world, extensions)
    assert world.recorder.calls == []
    assert sent and sent[0]["type"] in ("websocket.close", "websocket.http.response.start")
    if sent[0]["type"] == "websocket.http.response.start":
        assert sent[0]["status"] == 403


# -- WSGI ---------------------------------------------------------------------------------


class RecordingWSGI:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = str(environ.get("CONTENT_LENGTH") or "")
        stream = environ["wsgi.input"]
        if not length.isdigit():
            body = stream.read()
        else:  # as a framework reads: until the length is in, or the input ends
            body = b""
            while len(body) < int(length):
                chunk = stream.read(int(length) - len(body))
                if not chunk:
                    break
                body += chunk
        self.bodies.append((environ["REQUEST_METHOD"], body))
        start_response("200 OK", [("content-type", "text/plain"), ("content-length", "2")])
        return [b"ok"]


@contextlib.contextmanager
def _werkzeug(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_wsgi_holds_calls_with_and_without_a_body(clock: Any) -> None:
    world = anyio.run(build_world, MemoryStore(clock=clock), clock)
    app = RecordingWSGI()
    with (
        _werkzeug(AgentGuardWSGIMiddleware(app, world.guard)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        auth = world.alice.auth()
        held = [client.request(m, "/crm/w", headers=auth, content=b) for m, b in
                (("POST", b"one"), ("DELETE", b""), ("PUT", iter([b"chunk", b"ed"])))]  # fmt: skip
        for response in held:
            assert response.json()["error"] == "approval_required", response.text
        assert client.post("/crm/w", headers=auth, content=b"z" * 4097).status_code == 413
        assert app.bodies == []
        approval_id = held[1].json()["approval_id"]
        anyio.run(approve, world.guard, approval_id)
        assert client.delete("/crm/w", headers=world.alice.auth(approval_id)).status_code == 200
        chunked = held[2].json()["approval_id"]
        anyio.run(approve, world.guard, chunked)
        again = client.put(
            "/crm/w", headers=world.alice.auth(chunked), content=iter([b"chu", b"nked"])
        )
        assert again.status_code == 200, again.text
    assert app.bodies == [("DELETE", b""), ("PUT", b"chunked")]


class _ShortReads(io.RawIOBase):
    """A ``wsgi.input`` that returns at most ``step`` bytes per read, as a raw stream may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step = data, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk, self._data = self._data[: min(self._step, len(buffer))], self._data[self._step :]
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_wsgi_binds_the_whole_body_even_on_short_reads(clock: Any) -> None:
    world = anyio.run(build_world, MemoryStore(clock=clock), clock)
    app = RecordingWSGI()
    guarded = AgentGuardWSGIMiddleware(app, world.guard)

    def call(body: bytes, approval: str | None) -> tuple[str, bytes]:
        headers = world.alice.auth(approval)
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/crm/w", "QUERY_STRING": "",
            "SCRIPT_NAME": "", "SERVER_NAME": "gw.test", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": _ShortReads(body, 5), "CONTENT_LENGTH": str(len(body)),
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        }  # fmt: skip
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(line)
            return lambda data: None

        out = b"".join(guarded(environ, start_response))
        return status[0], out

    status, out = call(b"hello", None)
    assert status.startswith("403")

    approval_id = json.loads(out)["approval_id"]
    anyio.run(approve, world.guard, approval_id)
    status, _ = call(b"hello, and also wire the money", approval_id)
    assert app.bodies == [] and status.startswith("403"), (status, app.bodies)


# -- decorators ----------------------------------------------------------------------------


def test_flask_decorator_never_runs_a_held_route(clock: Any) -> None:
    world = anyio.run(build_world, MemoryStore(clock=clock), clock)
    app = Flask("gates")
    guard = AgentGuard(app, world.guard)
    ran: list[str] = []

    @app.route("/crm/items/<item>", methods=["DELETE"])
    @guard.require("crm", "write")
    def delete(item: str) -> str:
        ran.append(item)
        return "deleted"

    response = app.test_client().delete("/crm/items/1", headers=world.alice.auth())
    assert ran == [] and response.status_code in (403, 503), (response.status_code, ran)


async def test_fastapi_dependency_never_runs_a_held_route(world: World) -> None:
    app = FastAPI()
    install(app, world.guard)
    ran: list[str] = []

    @app.delete("/crm/items/{item}", dependencies=[require("crm", "write")])
    async def delete(item: str) -> dict[str, str]:
        ran.append(item)
        return {"deleted": item}

    async with world.client(app) as client:
        response = await client.delete("/crm/items/1", headers=world.alice.auth())
    assert ran == [] and response.status_code in (403, 503), (response.status_code, ran)


async def test_fastapi_behind_the_middleware_holds_the_route(world: World) -> None:
    app = FastAPI()
    install(app, world.guard)
    app.add_middleware(AgentGuardMiddleware, guard=world.guard)
    ran: list[str] = []

    @app.delete("/crm/items/{item}", dependencies=[require("crm", "write")])
    async def delete(item: str) -> dict[str, str]:
        ran.append(item)
        return {"deleted": item}

    async with world.client(app) as client:
        approval_id = await hold(client, world.alice, "DELETE", "/crm/items/1")
        assert ran == []
        await approve(world.guard, approval_id)
        done = await client.delete("/crm/items/1", headers=world.alice.auth(approval_id))
        assert done.status_code == 200 and ran == ["1"]
        refusal(
            await client.delete("/crm/items/1", headers=world.alice.auth(approval_id)),
            403, "approval_invalid", "approval_used",
        )  # fmt: skip


async def test_authenticate_refuses_a_held_route_503(world: World) -> None:
    request = GuardRequest(
        method="DELETE", path="/crm/x", raw_path=b"/crm/x",
        headers=[(b"authorization", f"Bearer {world.alice.key}".encode())],
    )  # fmt: skip

    with pytest.raises(ServiceUnavailable) as refused:
        await world.guard.authenticate(request)
    assert refused.value.status == 503
