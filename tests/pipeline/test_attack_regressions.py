"""Regressions for what an attacker found in the adapter pipeline, over real HTTP.

Each section is one finding; the oracle is what the app or upstream received, or what the client
read, decoded the way a consumer decodes it (:func:`~tests.pipeline.attack_support.reads`:
``json.loads`` on the bytes, SSE ``data:`` lines, gzip). A marker the reviewers block must never
get through in any of those readings, and clean text must still pass byte for byte.
"""

from __future__ import annotations

import codecs
import gzip
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import httpx2
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.testclient import TestClient
from flask import Flask, request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocketDisconnect
from werkzeug.test import EnvironBuilder, run_wsgi_app

from agentguard import Guard, Principal, Requirement, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.integrations.fastapi import install, require
from agentguard.integrations.flask import AgentGuard
from agentguard.review import InjectionScreen, ReviewContext, Verdict
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware
from examples import mcp_server
from tests.integrations.test_fastapi_routing_oracle import (
    Recorder,
    _dependency,
    _expected,
    _own,
    security,
)
from tests.pipeline.attack_support import (
    PHRASE,
    SITE_ADAPTERS,
    Exchange,
    Keyed,
    Site,
    asgi_scope,
    fetch,
    keyed_guard,
    raw_http,
    reads,
    serve_site,
    serve_wsgi,
    status_of,
)
from tests.pipeline.deployments import ADAPTERS, BLOCK, Deployment, TokenScreen, deploy
from tests.support.servers import LoopbackServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CONTENT_TYPES = ("application/json", "text/plain", None, "text/event-stream")


@pytest.fixture(scope="module", params=ADAPTERS)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    with deploy(request.param) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve_site([InjectionScreen(), TokenScreen()]) as served:
        yield served


def bearer(key: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {key}")]


def framed(document: str, content_type: str | None) -> bytes:
    """A JSON document as a body of ``content_type`` (one SSE event for an event stream)."""
    if content_type == "text/event-stream":
        return f"event: message\ndata: {document}\n\n".encode()
    return document.encode()


def exchange(site: Site, adapter: str, direction: str, body: bytes, kind: str | None) -> bytes:
    """Send ``body`` one way through ``adapter``: what the app received (in) or the client
    read (out), all concatenated; asserts the status is a refusal or ``200``."""
    url = site.url(adapter) + "/notes"
    headers = bearer(site.keyed.key)
    if direction == "in":
        site.backend.answer()
        sent = headers + ([("Content-Type", kind)] if kind else [])
        fetched = fetch(url, method="POST", headers=sent, body=body)
        assert fetched.status in (200, 403), fetched.body
        return b"".join(site.backend.received)
    site.backend.answer([body], content_type=kind)
    fetched = fetch(url, headers=headers)
    assert fetched.status in (200, 403), fetched.body
    return fetched.body


# -- 1. UTF-16/32 bodies: reviewed as the JSON parser reads them ---------------------------

CHARSETS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")
BOMS = {
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}
FILLER = st.text(alphabet="abcdefghij ", max_size=12)


def encoded(text: str, charset: str, bom: bool) -> bytes:
    """``text`` in ``charset`` (``utf-16``/``utf-32`` always carry a BOM; the others when
    ``bom``)."""
    return (BOMS[charset] if bom and charset in BOMS else b"") + text.encode(charset)


@EXAMPLES
@given(
    charset=st.sampled_from(CHARSETS),
    bom=st.booleans(),
    direction=st.sampled_from(["in", "out"]),
    config=st.sampled_from(["own", "guard", "none"]),
    dirty=st.booleans(),
    before=FILLER,
    after=FILLER,
)
def test_a_utf16_or_utf32_body_is_reviewed_as_a_json_parser_reads_it(  # noqa: PLR0917
    deployment: Deployment,
    charset: str,
    bom: bool,
    direction: str,
    config: str,
    dirty: bool,
    before: str,
    after: str,
) -> None:
    word = BLOCK if dirty else "fine"
    body = encoded(json.dumps({"note": f"{before}{word}{after}"}), charset, bom)
    assert reads(body, BLOCK) is dirty  # json.loads finds the marker: the test can fail
    blocked = dirty and config != "none"
    path = f"/{config}/notes"
    headers = {"Content-Type": "application/json"}
    script = deployment.script
    with deployment.client() as client:
        if direction == "in":
            script.reset()
            response = client.post(
                path, content=body, headers={**deployment.auth("cs-in"), **headers}
            )
            seen = b"".join(received.body for received in script.received)
        else:
            script.reset([body])
            response = client.get(path, headers=deployment.auth("cs-out"))
            seen = response.content
    assert response.status_code == (403 if blocked else 200), response.text
    if blocked:
        assert not reads(seen, BLOCK)
    elif deployment.adapter == "proxy" and direction == "out":  # re-encoded as UTF-8 (_relay)
        assert json.loads(seen) == json.loads(body)
    else:  # a clean UTF-16/32 body (or no reviewers) passes byte for byte
        assert seen == body


# -- 2. JSON escapes, whatever the declared content type -----------------------------------

HEX_FORMS = ("\\u%04x", "\\u%04X")
ESCAPED_SPACES = ("\\t", "\\n", "\\r\\n", "\\u0020", "\\t\\n", " \\t")


@st.composite
def escaped_token(draw: st.DrawFn) -> tuple[str, str]:
    """:data:`BLOCK` with at least one letter as a ``\\uXXXX`` escape."""
    mask = draw(st.lists(st.booleans(), min_size=len(BLOCK), max_size=len(BLOCK)).filter(any))
    form = draw(st.sampled_from(HEX_FORMS))
    text = "".join(form % ord(c) if escape else c for c, escape in zip(BLOCK, mask, strict=True))
    return text, BLOCK


@st.composite
def escaped_phrase(draw: st.DrawFn) -> tuple[str, str]:
    """:data:`PHRASE` with its words split by escaped whitespace (and maybe one escaped
    letter), as a JSON encoder writes tabs and newlines."""
    words = PHRASE.split(" ")
    gaps = draw(st.lists(st.sampled_from(ESCAPED_SPACES), min_size=len(words) - 1).map(iter))
    text = words[0] + "".join(next(gaps, " ") + word for word in words[1:])
    if draw(st.booleans()):
        text = text.replace("I", "\\u0049", 1)
    return text, PHRASE


@EXAMPLES
@given(
    adapter=st.sampled_from(SITE_ADAPTERS),
    direction=st.sampled_from(["in", "out"]),
    kind=st.sampled_from(CONTENT_TYPES),
    form=st.one_of(escaped_token(), escaped_phrase()),
)
@example(adapter="proxy", direction="out", kind="text/plain", form=("\\u0045\\u0056IL", BLOCK))
@example(adapter="asgi", direction="in", kind=None, form=("\\u0045VIL", BLOCK))
def test_a_json_escaped_marker_is_refused_whatever_the_content_type(
    site: Site, adapter: str, direction: str, kind: str | None, form: tuple[str, str]
) -> None:
    text, marker = form
    body = framed('{"note": "' + text + '"}', kind)
    assert reads(body, marker)  # a JSON parser decodes it: the test can fail
    seen = exchange(site, adapter, direction, body, kind)
    assert not reads(seen, marker)


CLEAN_WORDS = (
    "report", "C:\\new\\table", "C:\\Users\\tom\\notes.txt", 'say "hi"', "tab\there",
    "line\nbreak", "100%", "naïve café", "a/b/c", "back\\slash", "\\u", "{json}", "",
)  # fmt: skip


@EXAMPLES
@given(
    adapter=st.sampled_from(SITE_ADAPTERS),
    direction=st.sampled_from(["in", "out"]),
    kind=st.sampled_from(CONTENT_TYPES),
    words=st.lists(st.sampled_from(CLEAN_WORDS), min_size=1, max_size=4),
    ascii_only=st.booleans(),
)
def test_clean_json_with_escapes_passes_byte_for_byte(  # noqa: PLR0917
    site: Site,
    adapter: str,
    direction: str,
    kind: str | None,
    words: list[str],
    ascii_only: bool,
) -> None:
    body = framed(json.dumps({"notes": words}, ensure_ascii=ascii_only), kind)
    assert exchange(site, adapter, direction, body, kind) == body


@pytest.mark.parametrize("adapter", SITE_ADAPTERS)
@pytest.mark.parametrize("direction", ["in", "out"])
@pytest.mark.parametrize(
    "text",
    [b"C:\\new\\table\\report.txt", b"see C:\\temp\\new\\buffer and \\\\server\\share\\bin"],
    ids=["path", "paths"],
)
def test_a_windows_path_in_text_plain_passes_the_injection_screen(
    site: Site, adapter: str, direction: str, text: bytes
) -> None:
    # The escape reading turns \n, \t, \b into whitespace; that is harmless here.
    assert exchange(site, adapter, direction, text, "text/plain") == text


# -- 2b. The MCP SDK: tool results and arguments whose words are split by \t or \n ---------

MCP_USER = "attack-writer"


@pytest.fixture
def mcp_site() -> Iterator[tuple[str, MemoryStore, str]]:
    clock = FakeClock(datetime.now(timezone.utc))  # the SDK checks expiry on the real clock
    store = MemoryStore(clock=clock)
    guard = Guard(
        store, clock=clock, request_reviewers=[InjectionScreen()],
        response_reviewers=[InjectionScreen()],
    )  # fmt: skip

    async def issue() -> str:
        user = await make_user(store, user_id=MCP_USER, grants="notes:write")
        return (await guard.issuer.issue(user.id, "ws-1")).access_key.reveal()

    key = anyio.run(issue)
    apps: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await apps[0](scope, receive, send)

    server = LoopbackServer(app, lifespan="on")
    apps.append(mcp_server.create_app(guard, f"{server.url}/mcp"))
    try:
        with server:
            yield f"{server.url}/mcp", store, key
    finally:
        mcp_server.NOTES.pop(MCP_USER, None)


async def _call_tool(url: str, key: str, name: str, arguments: dict[str, Any]) -> str | None:
    """The tool result's text as the model reads it, or ``None`` when the call was refused."""
    try:
        with anyio.fail_after(15):
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=10) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as client,
            ):
                await client.initialize()
                result = await client.call_tool(name, arguments)
    except Exception:  # the SDK raises inside its task groups on a refusal
        return None
    return result.model_dump_json()


async def _verdict_out(store: MemoryStore, seconds: float = 5.0) -> bool:
    """Whether a response ``review.verdict`` is audited (polled: it is written as the
    response closes, which may be after the client has read it)."""
    deadline = anyio.current_time() + seconds
    while True:
        events: list[dict[str, Any]] = [entry.event() for entry in await store.read()]
        if any(
            e["action"] == "review.verdict" and e["detail"]["direction"] == "out" for e in events
        ):
            return True
        if anyio.current_time() > deadline:
            return False
        await anyio.sleep(0.01)


SEPARATORS = pytest.mark.parametrize(
    "sep", [" ", "\t", "\n", "\r\n", "\t \n"], ids=["space", "tab", "lf", "crlf", "mixed"]
)


@pytest.mark.anyio
@SEPARATORS
async def test_an_injected_tool_result_never_reaches_the_model(
    mcp_site: tuple[str, MemoryStore, str], sep: str
) -> None:
    url, store, key = mcp_site
    mcp_server.NOTES[MCP_USER] = [sep.join(PHRASE.split(" "))]
    shown = await _call_tool(url, key, "list_notes", {})
    assert shown is None or not reads(shown.encode(), PHRASE)
    assert await _verdict_out(store)  # audited, once the response is over


@pytest.mark.anyio
@SEPARATORS
async def test_injected_tool_arguments_never_reach_the_tool(
    mcp_site: tuple[str, MemoryStore, str], sep: str
) -> None:
    url, _, key = mcp_site
    shown = await _call_tool(url, key, "add_note", {"text": sep.join(PHRASE.split(" "))})
    assert shown is None
    assert mcp_server.NOTES.get(MCP_USER, []) == []


# -- 3. Every Content-Encoding field counts -------------------------------------------------

CODINGS = st.sampled_from(["gzip", "GZIP", "identity", "Identity"])
FIELD = st.tuples(st.lists(CODINGS, min_size=1, max_size=2), st.sampled_from([", ", ",", " ,"]))
FIELDS = st.lists(FIELD.map(lambda drawn: drawn[1].join(drawn[0])), min_size=1, max_size=3)


@EXAMPLES
@given(
    fields=FIELDS,
    direction=st.sampled_from(["in", "out"]),
    config=st.sampled_from(["own", "guard"]),
)
@example(fields=["gzip"], direction="in", config="guard")
@example(fields=["gzip", "identity"], direction="out", config="guard")
@example(fields=["identity", "gzip"], direction="in", config="guard")
@example(fields=["identity", "gzip"], direction="out", config="guard")
@example(fields=["identity, gzip"], direction="in", config="own")
@example(fields=["identity, gzip"], direction="out", config="own")
def test_a_body_coded_in_any_content_encoding_field_is_never_passed_unread(
    deployment: Deployment, fields: list[str], direction: str, config: str
) -> None:
    layers = sum(field.lower().count("gzip") for field in fields)
    coded = layers > 0
    body = f"payload {BLOCK} payload".encode() if coded else b"clean payload"
    for _ in range(layers):  # coded as the fields say, each gzip once
        body = gzip.compress(body)
    codings = [("Content-Encoding", field) for field in fields]
    script = deployment.script
    headers = [*deployment.auth("ce").items(), ("Content-Type", "text/plain")]
    if direction == "in":
        script.reset()
        fetched = fetch(
            deployment.url + f"/{config}/x", method="POST", headers=headers + codings, body=body
        )
        seen = b"".join(received.body for received in script.received)
    else:
        script.reset([body], extra=codings)
        fetched = fetch(deployment.url + f"/{config}/x", headers=headers)
        seen = fetched.body
    if coded:
        assert not reads(seen, BLOCK)
        if deployment.adapter == "proxy":  # 415 for a coded request; a response decoded by httpx
            assert fetched.status in (403, 415, 502), fetched.body
        else:
            assert fetched.status == 403, fetched.body
            assert json.loads(fetched.body)["review_reason"] == "encoded_body_unreviewable"
    else:  # identity in every field: read as it is, passed as it is
        assert (fetched.status, seen) == (200, body)


# -- 4. WSGI: a lazy start_response -------------------------------------------------------


class MediaTypes:
    """A streaming reviewer that notes the media type each window was reviewed under."""

    name = "media_types"
    streaming = True
    overlap = 0

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        self.seen.append(context.content_type)
        return Verdict.allow(self.name)


class LazyApp:
    """A PEP 3333 app that yields ``empties`` empty chunks before calling start_response."""

    def __init__(self) -> None:
        self.empties = 1
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.early = b""  # a (non-conforming) chunk before start_response

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        def body() -> Iterator[bytes]:
            for _ in range(self.empties):
                yield b""
            if self.early:
                yield self.early
            start_response("200 OK", self.headers)
            yield self.body

        return body()


@pytest.fixture
def lazy_wsgi() -> Iterator[tuple[str, LazyApp, MediaTypes, Keyed]]:
    media = MediaTypes()
    keyed = keyed_guard(response_reviewers=[TokenScreen(), media])
    app = LazyApp()
    with serve_wsgi(AgentGuardWSGIMiddleware(app, keyed.guard)) as (url, _):
        yield url, app, media, keyed


@EXAMPLES
@given(
    empties=st.integers(1, 3),
    coding=st.sampled_from([None, "gzip", "identity, gzip"]),
    dirty=st.booleans(),
)
def test_a_lazy_start_response_is_reviewed_under_its_own_headers(
    lazy_wsgi: tuple[str, LazyApp, MediaTypes, Keyed],
    empties: int,
    coding: str | None,
    dirty: bool,
) -> None:
    url, app, media, keyed = lazy_wsgi
    payload = f'{{"note": "{BLOCK if dirty else "fine"}"}}'.encode()
    app.empties, app.early = empties, b""
    app.headers = [("Content-Type", "application/json")]
    app.body = payload
    if coding is not None:
        app.headers.append(("Content-Encoding", coding))
        app.body = gzip.compress(payload)
    media.seen.clear()
    fetched = fetch(url + "/x", headers=bearer(keyed.key))
    if coding is not None or dirty:
        assert fetched.status == 403
        assert not reads(fetched.body, BLOCK)
    else:
        assert (fetched.status, fetched.body) == (200, payload)
        assert set(media.seen) == {"application/json"}


def test_a_body_before_start_response_never_reaches_the_client(
    lazy_wsgi: tuple[str, LazyApp, MediaTypes, Keyed],
) -> None:
    url, app, _, keyed = lazy_wsgi
    app.empties, app.early, app.body = 0, f"early {BLOCK}".encode(), b"late"
    app.headers = [("Content-Type", "text/plain")]
    fetched = fetch(url + "/x", headers=bearer(keyed.key))
    assert fetched.status >= 500 or fetched.cut
    assert not reads(fetched.body, BLOCK)


# -- 5. WSGI: a Content-Length with non-ASCII digits is a 400 -------------------------------


@pytest.fixture
def length_site() -> Iterator[tuple[int, Keyed, list[bytes]]]:
    keyed = keyed_guard(request_reviewers=[TokenScreen()])
    ran: list[bytes] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        ran.append(environ["wsgi.input"].read(2))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with serve_wsgi(AgentGuardWSGIMiddleware(app, keyed.guard)) as (_, port):
        yield port, keyed, ran


@pytest.mark.parametrize("length", [b"\xb2", b"\xb9", b"\xb3", b"1\xb2", b"\xb90", b"2"])
def test_a_content_length_in_superscript_digits_is_a_400_not_a_500(
    length_site: tuple[int, Keyed, list[bytes]], length: bytes
) -> None:
    port, keyed, ran = length_site
    request = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + keyed.key.encode()
        + b"\r\nContent-Length: " + length + b"\r\nConnection: close\r\n\r\nab"
    )  # fmt: skip
    response = raw_http(port, request)
    if length == b"2":  # the control: a plain length is read as before
        assert status_of(response) == 200
        assert ran == [b"ab"]
        return
    assert status_of(response) == 400, response[:200]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"] == "invalid_request"
    assert ran == []


NON_ASCII_DIGITS = st.characters(categories=["Nd", "No"]).filter(lambda c: not c.isascii())


@EXAMPLES
@given(
    length=st.lists(
        st.one_of(NON_ASCII_DIGITS, st.sampled_from("0123456789")), min_size=1, max_size=4
    )
    .map("".join)
    .filter(lambda text: not text.isascii())
)
def test_any_non_ascii_content_length_is_refused_before_the_app(
    length_site: tuple[int, Keyed, list[bytes]], length: str
) -> None:
    _, keyed, _ = length_site
    ran: list[str] = []

    def inner(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        ran.append(str(environ.get("CONTENT_LENGTH")))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    app = AgentGuardWSGIMiddleware(inner, keyed.guard)
    environ = EnvironBuilder(
        "/x", method="POST", data=b"ab", headers=[("Authorization", f"Bearer {keyed.key}")]
    ).get_environ()
    environ["CONTENT_LENGTH"] = length
    chunks, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("400"), status
    assert b"invalid_request" in b"".join(chunks)
    assert ran == []


# -- 6. Flask: the decorator alone refuses when the guard has reviewers ---------------------


def _flask(keyed: Keyed, *, middleware: bool) -> tuple[Flask, list[bytes]]:
    app = Flask("attack")
    agent = AgentGuard(app, keyed.guard)
    ran: list[bytes] = []

    @app.post("/notes")
    @agent.require("crm", "write")
    def notes() -> str:
        ran.append(request.get_data())
        return f"upstream says {BLOCK}" if b"echo" in request.get_data() else "ok"

    if middleware:
        app.wsgi_app = AgentGuardWSGIMiddleware(app.wsgi_app, keyed.guard)  # type: ignore[method-assign]
    return app, ran


@pytest.mark.parametrize("middleware", [False, True], ids=["decorator-only", "with-middleware"])
def test_the_flask_decorator_never_runs_a_view_unreviewed(middleware: bool) -> None:
    keyed = keyed_guard(request_reviewers=[TokenScreen()], response_reviewers=[TokenScreen()])
    app, ran = _flask(keyed, middleware=middleware)
    headers = bearer(keyed.key)
    with serve_wsgi(app) as (url, _):
        clean = fetch(url + "/notes", method="POST", headers=headers, body=b"hello")
        dirty_in = fetch(url + "/notes", method="POST", headers=headers, body=f"x {BLOCK}".encode())
        dirty_out = fetch(url + "/notes", method="POST", headers=headers, body=b"echo")
    assert not reads(dirty_out.body, BLOCK)
    assert BLOCK.encode() not in b"".join(ran)
    if middleware:
        assert [clean.status, dirty_in.status, dirty_out.status] == [200, 403, 403]
        assert ran == [b"hello", b"echo"]
        return
    for response in (clean, dirty_in, dirty_out):
        assert response.status == 503
        assert json.loads(response.body)["reason"] == "internal_error"
    assert ran == []
    denials = [e for e in keyed.events() if e.get("reason") == "internal_error"]
    assert [e["decision"] for e in denials] == ["deny"] * 3


def test_the_flask_decorator_alone_still_decides_without_reviewers() -> None:
    keyed = keyed_guard()
    app, ran = _flask(keyed, middleware=False)
    with serve_wsgi(app) as (url, _):
        allowed = fetch(url + "/notes", method="POST", headers=bearer(keyed.key), body=b"hi")
        refused = fetch(url + "/notes", method="POST", body=b"hi")
    assert (allowed.status, refused.status, ran) == (200, 401, [b"hi"])


# -- 7. Pass-on mode: any whitespace ends the Authorization scheme --------------------------


async def _who(scope: Any, receive: Any, send: Any) -> None:
    answer = b"yes" if scope["user"].is_authenticated else b"no"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]}
    )
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def pass_on() -> Iterator[tuple[int, Keyed, AgentGuardMiddleware]]:
    keyed = keyed_guard()
    app = AgentGuardMiddleware(_who, keyed.guard, unauthenticated="pass")
    with LoopbackServer(app) as server:
        yield server.port, keyed, app


CREDENTIALS = st.sampled_from(["{key}", "garbage", "eyJhbGciOi.eyJzdWIi.sig"])
SCHEMES = st.sampled_from(["Bearer", "bearer", "BEARER"])


@EXAMPLES
@given(
    scheme=SCHEMES,
    gap=st.lists(st.sampled_from([b" ", b"\t"]), min_size=1, max_size=3).map(b"".join),
    credential=CREDENTIALS,
)
def test_pass_mode_decides_bearer_however_the_scheme_is_separated(
    pass_on: tuple[int, Keyed, AgentGuardMiddleware], scheme: str, gap: bytes, credential: str
) -> None:
    port, keyed, _ = pass_on
    value = scheme.encode() + gap + credential.replace("{key}", keyed.key).encode()
    before = len(keyed.events())
    response = raw_http(
        port,
        b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: " + value + b"\r\nConnection: close\r\n\r\n",
    )
    assert not response.endswith(b"\r\n\r\nno")  # never the app's, unauthenticated
    assert status_of(response) != 200 or response.endswith(b"yes")
    if credential == "{key}":  # decided by the guard, so audited (garbage is only counted)
        assert len(keyed.events()) > before


@EXAMPLES
@given(
    scheme=SCHEMES,
    gap=st.lists(st.sampled_from([b" ", b"\t", b"\v", b"\f", b"\r", b"\n"]), min_size=1, max_size=3)
    .map(b"".join)
    .filter(lambda gap: gap.strip(b" \t") != b""),
    credential=CREDENTIALS,
)
def test_pass_mode_decides_bearer_split_by_any_whitespace_in_process(
    pass_on: tuple[int, Keyed, AgentGuardMiddleware], scheme: str, gap: bytes, credential: str
) -> None:
    _, keyed, app = pass_on
    value = scheme.encode() + gap + credential.replace("{key}", keyed.key).encode()
    wire = Exchange([{"type": "http.request", "body": b""}])
    anyio.run(app, asgi_scope("/", [(b"authorization", value)]), wire.receive, wire.send)
    answered = b"".join(m.get("body", b"") for m in wire.sent if m["type"] == "http.response.body")
    assert answered != b"no"


# -- 8. FastAPI: require() on websocket routes ----------------------------------------------


def _ws_app(keyed: Keyed, *, middleware: bool) -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    install(app, keyed.guard)
    ran: list[str] = []

    @app.websocket("/crm/read")
    async def read(
        websocket: WebSocket, principal: Annotated[Principal, require("crm", "read")]
    ) -> None:
        ran.append("read")
        await websocket.accept()
        await websocket.send_text(f"hello {principal.user_id}")
        await websocket.close()

    @app.websocket("/crm/write")
    async def write(
        websocket: WebSocket, principal: Annotated[Principal, require("crm", "write")]
    ) -> None:
        ran.append("write")
        await websocket.accept()
        await websocket.close()

    if middleware:
        app.add_middleware(AgentGuardMiddleware, guard=keyed.guard)
    return app, ran


def _ws_close(client: TestClient, path: str, headers: dict[str, str]) -> int:
    """The close code of a websocket the app refuses before accepting it."""
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(path, headers=headers) as ws,
    ):
        ws.receive_text()
    return refused.value.code


@pytest.mark.parametrize("middleware", [False, True], ids=["dependencies-only", "with-middleware"])
def test_require_guards_websocket_routes(middleware: bool) -> None:
    keyed = keyed_guard(rules=[RouteRule("/crm", service="crm", level="read")], grants="crm:read")
    app, ran = _ws_app(keyed, middleware=middleware)
    headers = {"Authorization": f"Bearer {keyed.key}"}
    with TestClient(app) as client:
        with client.websocket_connect("/crm/read", headers=headers) as ws:
            assert ws.receive_text().startswith("hello ")
        assert _ws_close(client, "/crm/write", headers) == 1008
        if not middleware:
            assert _ws_close(client, "/crm/read", {}) == 1008
    assert ran == ["read"]
    denials = [e for e in keyed.events() if e.get("reason") == "insufficient_scope"]
    assert [e["decision"] for e in denials] == ["deny"]


def test_require_alone_refuses_a_websocket_when_the_guard_has_reviewers() -> None:
    keyed = keyed_guard(
        rules=[RouteRule("/crm", service="crm", level="read")], grants="crm:read",
        request_reviewers=[TokenScreen()],
    )  # fmt: skip
    app, ran = _ws_app(keyed, middleware=False)
    with TestClient(app) as client:
        code = _ws_close(client, "/crm/read", {"Authorization": f"Bearer {keyed.key}"})
    assert (code, ran) == (1008, [])
    assert [e["decision"] for e in keyed.events() if e.get("reason") == "internal_error"] == [
        "deny"
    ]


# -- 9. FastAPI routing: nested routers, {p:path}, trailing slashes, methods, root_path -----

METHODS = ("GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE")


@st.composite
def templates(draw: st.DrawFn) -> str:
    segments = draw(
        st.lists(st.sampled_from(["a", "b", "{x}", "{n:int}", "{p:path}"]), min_size=1, max_size=3)
    )
    named: list[str] = []
    for index, segment in enumerate(segments):
        named.append(
            segment.replace("{", "{v" + str(index) + "_", 1) if "{" in segment else segment
        )
        if segment == "{p:path}":
            break
    return "/" + "/".join(named) + draw(st.sampled_from(["", "", "/"]))


ROUTE = st.tuples(
    templates(),
    st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True),
    st.sampled_from([None, "any", "read", "write"]),
    st.booleans(),  # a plain Starlette route (no dependant)
)
SPEC = st.fixed_dictionaries(
    {
        "top": st.lists(ROUTE, max_size=4),
        "outer": st.lists(ROUTE, max_size=3),
        "inner": st.lists(ROUTE, max_size=3),
        "prefix": st.sampled_from(["", "/v"]),
        "declared": st.sampled_from([None, "read"]),
        "root_path": st.sampled_from(["", "/api"]),
        "order": st.permutations(["top", "router"]),
    }
)
PATHS = st.tuples(
    st.sampled_from(METHODS),
    st.lists(st.sampled_from(["a", "b", "r", "i", "v", "1", "zz"]), max_size=5),
    st.booleans(),
).map(lambda d: (d[0], "/" + "/".join(d[1]) + ("/" if d[2] else "")))


def _served(number: int) -> Response:
    return PlainTextResponse(str(number), headers={"x-served": str(number)})


def _plain_endpoint(number: int) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return _served(number)

    return endpoint


def _api_endpoint(number: int) -> Callable[[], Awaitable[Response]]:
    async def endpoint() -> Response:
        return _served(number)

    return endpoint


def _routing_app(
    spec: dict[str, Any], seen: list[Requirement | None]
) -> tuple[FastAPI, dict[int, Requirement | None]]:
    app = FastAPI()
    install(app, Guard(MemoryStore()))
    expected: dict[int, Requirement | None] = {}
    counter = iter(range(1000))

    def add(target: FastAPI | APIRouter, route: tuple[Any, ...], outer: list[Requirement]) -> None:
        template, methods, declared, plain = route
        number = next(counter)
        service = f"s{number}"
        if plain:
            target.add_route(template, _plain_endpoint(number), methods=methods)
            expected[number] = None
            return
        target.add_api_route(
            template,
            _api_endpoint(number),
            methods=methods,
            dependencies=_dependency(declared, service),
        )
        groups = [outer, _own(declared, service)] if outer else [_own(declared, service)]
        expected[number] = _expected(groups)

    for group in spec["order"]:
        if group == "top":
            for route in spec["top"]:
                add(app, route, [])
            continue
        outer = APIRouter(prefix="/r", dependencies=_dependency(spec["declared"], "router"))
        inner = APIRouter(prefix="/i")
        for route in spec["outer"]:
            add(outer, route, _own(spec["declared"], "router"))
        for route in spec["inner"]:
            add(inner, route, _own(spec["declared"], "router"))
        outer.include_router(inner)
        app.include_router(outer, prefix=spec["prefix"])
    app.dependency_overrides[security] = lambda: None
    app.add_middleware(Recorder, seen=seen)
    return app, expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPEC, st.lists(PATHS, min_size=1, max_size=10))
def test_route_requirements_agree_with_routing_in_nested_routers(
    spec: dict[str, Any], requests: list[tuple[str, str]]
) -> None:
    seen: list[Requirement | None] = []
    app, expected = _routing_app(spec, seen)
    root = spec["root_path"]
    with TestClient(app, follow_redirects=False, root_path=root) as client:
        for method, path in requests:
            seen.clear()
            response = client.request(method, root + path)
            served = response.headers.get("x-served") if response.status_code == 200 else None
            want = None if served is None else expected[int(served)]
            assert seen == [want], (method, path, response.status_code, served)


# -- 10. Still open: an escape or a UTF-32 letter split across two streamed chunks ----------

_PAD = '{"pad": "' + "a" * 1100 + '", "note": "'  # past the proxy's 1 KiB head: it streams too
_ESCAPED = (_PAD + "".join(f"\\u{ord(c):04x}" for c in BLOCK) + '"}').encode()
_UTF32 = (_PAD + BLOCK + '"}').encode("utf-32-le")
_AT = len(_PAD)
SPLITS = {
    "escape": (_ESCAPED[: _AT + 10], _ESCAPED[_AT + 10 :]),  # inside the second \\u escape
    "utf-32": (_UTF32[: 4 * _AT + 8], _UTF32[4 * _AT + 8 :]),  # between the "V" and the "I"
}


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_a_marker_split_across_streamed_chunks_is_still_refused(
    deployment: Deployment, split: str, request: pytest.FixtureRequest
) -> None:
    # Each window holds back six times the reviewers' overlap (the longest reading of one
    # character), so no escaped or UTF-32 form is split between two windows' readings.
    del request
    first, second = SPLITS[split]
    gate = threading.Event()
    deployment.script.reset([first, second], gate=gate)
    headers = list(deployment.auth("split").items())
    fetched = fetch(deployment.url + "/guard/x", headers=headers, gate=gate)
    assert reads(first + second, BLOCK)  # whole, a JSON parser reads the marker
    assert not reads(fetched.body, BLOCK)
