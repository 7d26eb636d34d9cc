"""Content review at the edges of the protocols, driven message by message (no server).

What a loopback server cannot show: whether the adapter touched ``receive`` or ``wsgi.input``
before the app ran, an HTTP/2 request (a body with no ``Content-Length``), an app that keeps
sending after a cut, and the ``http.response.pathsend`` extension.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.responses import FileResponse

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._types import ASGIApp, Message, Receive, Scope, Send
from agentguard.integrations.mcp import AgentGuardMCP
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware, default_portal
from tests.pipeline.deployments import BLOCK, TokenScreen

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = pytest.mark.anyio
Wrap = Callable[..., ASGIApp]
WRAPS = pytest.mark.parametrize(
    "wrap",
    [AgentGuardMiddleware, functools.partial(AgentGuardMCP, mcp_path="/mcp")],
    ids=["middleware", "mcp"],
)
NO_REVIEW = pytest.mark.parametrize(
    "reviewers",
    [{}, {"request_reviewers": [], "response_reviewers": []}],
    ids=["none", "turned-off"],
)


@dataclass
class Setup:
    store: MemoryStore
    plain: Guard
    reviewed: Guard
    key: str


def _setup() -> Setup:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rules = [RouteRule("/", service="crm")]
    plain = Guard(store, rules=rules, clock=clock)
    reviewed = Guard(
        store,
        rules=rules,
        clock=clock,
        request_reviewers=[TokenScreen()],
        response_reviewers=[TokenScreen()],
    )

    async def issue() -> str:
        user = await make_user(store, grants="crm:write")
        return (await plain.issuer.issue(user.id, "ws-1")).access_key.reveal()

    return Setup(store, plain, reviewed, default_portal().call(issue))


@pytest.fixture
def setup() -> Setup:
    return _setup()


def http_scope(key: str, headers: list[tuple[bytes, bytes]], **extra: Any) -> Scope:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/notes",
        "raw_path": b"/notes",
        "root_path": "",
        "query_string": b"",
        "scheme": "http",
        "headers": [(b"authorization", f"Bearer {key}".encode()), *headers],
        **extra,
    }


@dataclass
class Wire:
    """The server side of one ASGI exchange: what the client sends, what the app sends back."""

    incoming: list[Message]
    received: int = 0
    sent: list[Message] = field(default_factory=list)

    async def receive(self) -> Message:
        self.received += 1
        return self.incoming.pop(0) if self.incoming else {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def body_messages(*chunks: bytes) -> list[Message]:
    last = len(chunks) - 1
    return [
        {"type": "http.request", "body": chunk, "more_body": index < last}
        for index, chunk in enumerate(chunks)
    ]


@dataclass
class ReadingApp:
    """Reads the whole body, noting how often ``receive`` had been called before it ran."""

    wire: Wire
    before: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.before.append(self.wire.received)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@WRAPS
@NO_REVIEW
async def test_without_reviewers_the_asgi_body_is_never_read_before_the_app(
    setup: Setup, wrap: Wrap, reviewers: dict[str, list[object]]
) -> None:
    wire = Wire(body_messages(b"first " + BLOCK.encode(), b" second"))
    app = ReadingApp(wire)
    guard = setup.reviewed if reviewers else setup.plain
    guarded = wrap(app, guard, **reviewers)
    headers = [(b"transfer-encoding", b"chunked")]
    await guarded(http_scope(setup.key, headers), wire.receive, wire.send)
    assert app.before == [0]
    assert app.bodies == [b"first " + BLOCK.encode() + b" second"]
    assert wire.sent[0]["status"] == 200


class CountingInput(io.BytesIO):
    reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def wsgi_environ(key: str, body: io.BytesIO, **extra: object) -> dict[str, object]:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/notes",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": body,
        "wsgi.errors": io.StringIO(),
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        **extra,
    }


@dataclass
class ReadingWSGI:
    """Reads ``wsgi.input`` to the end, noting how often it had been read before it ran."""

    reads_before: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        stream = environ["wsgi.input"]
        self.reads_before.append(getattr(stream, "reads", 0))
        self.bodies.append(stream.read())
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]


def run_wsgi(app: Any, environ: dict[str, object]) -> tuple[str, bytes]:
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return statuses[0], body


@NO_REVIEW
def test_without_reviewers_wsgi_input_is_never_read_before_the_app(
    reviewers: dict[str, list[object]],
) -> None:
    setup = _setup()
    app = ReadingWSGI()
    guard = setup.reviewed if reviewers else setup.plain
    guarded = AgentGuardWSGIMiddleware(app, guard, **reviewers)  # type: ignore[arg-type]
    body = b"x" * 10 + BLOCK.encode()
    stream = CountingInput(body)
    environ = wsgi_environ(setup.key, stream, CONTENT_LENGTH=str(len(body)))
    status, _ = run_wsgi(guarded, environ)
    assert status.startswith("200")
    assert app.reads_before == [0]
    assert app.bodies == [body]


@WRAPS
async def test_an_http2_body_without_content_length_is_still_reviewed(
    setup: Setup, wrap: Wrap
) -> None:
    wire = Wire(body_messages(b"hi " + BLOCK.encode()))
    app = ReadingApp(wire)
    guarded = wrap(app, setup.plain, request_reviewers=[TokenScreen()])
    await guarded(http_scope(setup.key, [], http_version="2"), wire.receive, wire.send)
    assert app.bodies == []
    assert wire.sent[0]["status"] == 403


def test_a_terminated_wsgi_input_without_length_is_still_reviewed() -> None:
    setup = _setup()
    app = ReadingWSGI()
    guarded = AgentGuardWSGIMiddleware(app, setup.plain, request_reviewers=[TokenScreen()])
    environ = wsgi_environ(
        setup.key, io.BytesIO(b"hi " + BLOCK.encode()), **{"wsgi.input_terminated": True}
    )
    status, _ = run_wsgi(guarded, environ)
    assert app.bodies == []
    assert status.startswith("403")


@WRAPS
async def test_nothing_is_sent_after_a_mid_stream_block_even_if_the_app_carries_on(
    setup: Setup, wrap: Wrap
) -> None:
    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a" * 100, b"x " + BLOCK.encode() + b" y", b"b" * 20):
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except Exception:  # noqa: S112 - the misbehaving app under test
                continue
        await send({"type": "http.response.body", "body": b""})

    wire = Wire([])
    guarded = wrap(stubborn, setup.plain, response_reviewers=[TokenScreen()])
    await guarded(http_scope(setup.key, [], method="GET"), wire.receive, wire.send)
    assert wire.sent[0]["status"] == 200
    assert BLOCK.encode() not in wire.body()
    assert b"b" not in wire.body()
    assert all(m.get("more_body", False) for m in wire.sent if m["type"] == "http.response.body")


@WRAPS
async def test_a_file_response_is_reviewed_under_the_pathsend_extension(
    setup: Setup, wrap: Wrap, tmp_path: Path
) -> None:
    served = tmp_path / "answer.txt"
    served.write_bytes(b"file " + BLOCK.encode())
    wire = Wire([])
    guarded = wrap(
        FileResponse(served, media_type="text/plain"),
        setup.plain,
        response_reviewers=[TokenScreen()],
    )
    scope = http_scope(setup.key, [], method="GET", extensions={"http.response.pathsend": {}})
    await guarded(scope, wire.receive, wire.send)
    assert wire.sent[0]["type"] == "http.response.start"
    assert wire.sent[0]["status"] == 403
    assert all(m["type"] != "http.response.pathsend" for m in wire.sent)
