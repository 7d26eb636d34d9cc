"""One scripted app behind every adapter, served on loopback, for the pipeline suite.

Each deployment serves the same app four ways, by path prefix:

- ``/own``: a guard without reviewers, the adapter given its own (``request_reviewers=``...);
- ``/guard``: a guard with reviewers (``Guard(request_reviewers=...)``), the adapter given none;
- ``/off``: that same guard, the adapter given ``[]`` both ways (review turned off there);
- ``/none``: no reviewers anywhere.

The app records what it received and answers with the chunks its :class:`Script` holds; a gate
makes it wait after the first chunk until the client has seen bytes, so a "later window" really
arrives after the first one was sent.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx
from flask import Flask, Response, request
from starlette.routing import Mount, Router
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from agentguard import CredentialOwner, CredentialScope, Guard, RouteRule, ServiceConfig
from agentguard.asgi import AgentGuardMiddleware, ProxyApp
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.integrations.mcp import AgentGuardMCP
from agentguard.review import ReviewChain, ReviewContext, Verdict, fingerprint
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware
from tests.conftest import CANARY
from tests.support.servers import LoopbackServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

BLOCK = "EVIL"  # a reviewer blocks any body holding it
REDACT = "SECRET"  # ... and rewrites this one to SCRUBBED (neither overlaps itself or the other)
SCRUBBED = "##"
GUARD_CAP = 4096  # the guard-level chains' max_bytes (over it: blocked)
GATE_SECONDS = 10.0
CONFIGS = ("own", "guard", "off", "none")
ADAPTERS = ("asgi", "proxy", "wsgi", "flask", "mcp")


class TokenScreen:
    """Blocks a body holding :data:`BLOCK`, else redacts :data:`REDACT`; judges streams."""

    name = "token_screen"
    streaming = True
    overlap = max(len(BLOCK), len(REDACT)) - 1

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        if BLOCK in content:
            return Verdict.block(self.name, "dirty_token")
        if REDACT in content:
            replaced = content.replace(REDACT, SCRUBBED)
            return Verdict.redact(self.name, "secret_token", replaced, (fingerprint(REDACT),))
        return Verdict.allow(self.name)


def oracle(body: bytes) -> bytes | None:
    """The reviewer applied to the whole body: ``None`` when it blocks, else what passes."""
    if BLOCK.encode() in body:
        return None
    return body.replace(REDACT.encode(), SCRUBBED.encode())


@dataclass(frozen=True)
class Received:
    """One request body as the app (or upstream) read it, with its framing headers."""

    body: bytes
    content_length: tuple[str, ...]
    transfer_encoding: tuple[str, ...]


@dataclass
class Script:
    """What the app answers and what it saw; each test resets it."""

    chunks: list[bytes] = field(default_factory=lambda: [b"ok"])
    declare_length: bool = True
    gate: threading.Event | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def reset(
        self,
        chunks: list[bytes] | None = None,
        *,
        declare_length: bool = True,
        gate: threading.Event | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self.chunks = [b"ok"] if chunks is None else chunks
        self.declare_length = declare_length
        self.gate = gate
        self.extra = extra or []
        self.received = []

    def headers(self) -> list[tuple[str, str]]:
        headers = [("content-type", "text/plain; charset=utf-8"), *self.extra]
        if self.declare_length:
            headers.append(("content-length", str(sum(map(len, self.chunks)))))
        return headers

    def stream(self) -> Iterator[bytes]:
        """The chunks, waiting at the gate after the first (WSGI threads may block)."""
        for index, chunk in enumerate(self.chunks):
            yield chunk
            if index == 0 and self.gate is not None:
                self.gate.wait(GATE_SECONDS)


class ScriptedASGI:
    """The ASGI app (and the proxy's upstream)."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        self.script.received.append(
            Received(
                body,
                tuple(v.decode() for k, v in headers if k == b"content-length"),
                tuple(v.decode() for k, v in headers if k == b"transfer-encoding"),
            )
        )
        script = self.script
        raw = [(k.encode(), v.encode()) for k, v in script.headers()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        for index, chunk in enumerate(script.chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if index == 0 and script.gate is not None:
                await anyio.to_thread.run_sync(script.gate.wait, GATE_SECONDS)
        await send({"type": "http.response.body", "body": b""})


class ScriptedWSGI:
    """The plain WSGI app: reads ``wsgi.input`` by hand, answers with a generator."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        length = str(environ.get("CONTENT_LENGTH") or "")
        stream = environ["wsgi.input"]
        if length.isdigit():
            body = stream.read(int(length))
        else:
            body = stream.read() if environ.get("wsgi.input_terminated") else b""
        encoding = environ.get("HTTP_TRANSFER_ENCODING")
        self.script.received.append(
            Received(body, (length,) if length else (), (encoding,) if encoding else ())
        )
        start_response("200 OK", self.script.headers())
        return self.script.stream()


def scripted_flask(script: Script) -> Flask:
    """The Flask app: the same answers through Flask's own request and response objects."""
    app = Flask("pipeline")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT"])
    def echo(path: str) -> Response:
        body = request.get_data()
        length = request.headers.get("Content-Length")
        encoding = request.headers.get("Transfer-Encoding")
        script.received.append(
            Received(body, (length,) if length else (), (encoding,) if encoding else ())
        )
        return Response(script.stream(), headers=script.headers())

    return app


@dataclass
class Deployment:
    """One adapter serving the scripted app four ways (see the module doc)."""

    adapter: str
    url: str
    script: Script
    store: MemoryStore
    key: str
    actor: dict[str, str]
    service: str | None  # what review events name as the service

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=GATE_SECONDS + 5)

    def auth(self, request_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "X-Request-Id": request_id}

    def audit_log(self) -> list[dict[str, Any]]:
        return [entry.event() for entry in anyio.run(self.store.read)]

    def audit_text(self) -> bytes:
        return b"\n".join(entry.body for entry in anyio.run(self.store.read))

    def review_events(
        self, request_id: str, *, wait_for: int = 0, seconds: float = 5.0
    ) -> list[dict[str, Any]]:
        """The ``review.verdict`` events of one request; waits (polling) for ``wait_for``."""
        deadline = time.monotonic() + seconds
        while True:
            found = [
                event
                for event in self.audit_log()
                if event["action"] == "review.verdict" and event["request_id"] == request_id
            ]
            if len(found) >= wait_for or time.monotonic() > deadline:
                return found
            time.sleep(0.01)


@dataclass
class _Base:
    clock: FakeClock
    store: MemoryStore
    plain: Guard
    reviewed: Guard
    swapper: CredentialSwapper
    key: str
    actor: dict[str, str]


def _base() -> _Base:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rules = [RouteRule("/", service="crm")]
    plain = Guard(store, rules=rules, clock=clock)
    reviewed = Guard(
        store,
        rules=rules,
        clock=clock,
        request_reviewers=ReviewChain([TokenScreen()], max_bytes=GUARD_CAP),
        response_reviewers=ReviewChain([TokenScreen()], max_bytes=GUARD_CAP),
    )
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    swapper = CredentialSwapper(vault, clock=clock)

    async def setup() -> tuple[str, dict[str, str]]:
        user = await make_user(store, grants="crm:write")
        keys = await plain.issuer.issue(user.id, "ws-1")
        await vault.put("crm", CredentialOwner.USER, user.id, CANARY, scope=CredentialScope.USER)
        record = keys.access
        actor = {
            "user": record.user_id,
            "workspace": record.workspace_id,
            "account": record.account_id,
            "key_id": record.id,
            "family": record.family_id,
        }
        return keys.access_key.reveal(), actor

    key, actor = anyio.run(setup)
    return _Base(clock, store, plain, reviewed, swapper, key, actor)


Wrap = Callable[..., Any]


def _four(wrap: Wrap, app: Any, base: _Base) -> dict[str, Any]:
    """The app wrapped four ways by ``wrap(app, guard, **reviewers)``."""
    own = {"request_reviewers": [TokenScreen()], "response_reviewers": [TokenScreen()]}
    off: dict[str, list[Any]] = {"request_reviewers": [], "response_reviewers": []}
    return {
        "own": wrap(app, base.plain, **own),
        "guard": wrap(app, base.reviewed),
        "off": wrap(app, base.reviewed, **off),
        "none": wrap(app, base.plain),
    }


def _router(apps: Mapping[str, ASGIApp], proxies: list[ProxyApp] | None = None) -> Router:
    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        try:
            yield
        finally:  # the proxies' pooled clients live on the server's loop: close them there
            for proxy in proxies or ():
                await proxy.aclose()

    routes = [Mount(f"/{name}", app=app) for name, app in apps.items()]
    return Router(routes=routes, lifespan=lifespan)


@contextlib.contextmanager
def _werkzeug(app: WSGIApplication) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _not_found(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [("content-length", "0")])
    return []


@contextlib.contextmanager
def deploy(adapter: str) -> Iterator[Deployment]:
    """Serve the scripted app behind ``adapter`` on loopback for as long as the block runs."""
    base = _base()
    script = Script()

    def made(url: str, service: str | None = "crm") -> Deployment:
        return Deployment(adapter, url, script, base.store, base.key, base.actor, service)

    if adapter in ("asgi", "mcp"):
        # The MCP wrapper's own routes: its tool gate (strict JSON-RPC bodies) guards only the
        # SDK's endpoint, tested in tests/mcp; review runs on every route as everywhere.
        wrap: Wrap = (
            AgentGuardMiddleware
            if adapter == "asgi"
            else functools.partial(AgentGuardMCP, mcp_path="/mcp")
        )
        with LoopbackServer(_router(_four(wrap, ScriptedASGI(script), base))) as server:
            yield made(server.url, "crm" if adapter == "asgi" else None)
    elif adapter == "proxy":
        with LoopbackServer(ScriptedASGI(script)) as upstream:
            service = ServiceConfig(name="crm", base_url=upstream.url, allow_insecure_http=True)

            def proxy(app: None, guard: Guard, **reviewers: Any) -> ProxyApp:
                return ProxyApp(guard, service, base.swapper, buffer_bytes=1, **reviewers)

            proxies = _four(proxy, None, base)
            router = _router(proxies, list(proxies.values()))
            with LoopbackServer(router, lifespan="on") as server:
                yield made(server.url)
    elif adapter in ("wsgi", "flask"):
        inner: WSGIApplication = (
            ScriptedWSGI(script) if adapter == "wsgi" else scripted_flask(script).wsgi_app
        )
        mounts = {
            f"/{name}": app for name, app in _four(AgentGuardWSGIMiddleware, inner, base).items()
        }
        with _werkzeug(DispatcherMiddleware(_not_found, mounts)) as url:
            yield made(url)
    else:
        raise ValueError(adapter)
