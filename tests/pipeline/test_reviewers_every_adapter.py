"""One suite, every adapter: content review runs through the Passage the same way everywhere.

Each test runs against the ASGI middleware, the proxy (a loopback upstream), WSGI (a plain app
and a Flask app on a threaded Werkzeug server) and the MCP wrapper (around a plain ASGI app),
all on real sockets, so a cut stream is what a client really sees. The oracle is the reviewer
applied to the whole body (:func:`~tests.pipeline.deployments.oracle`).
"""

from __future__ import annotations

import gzip
import itertools
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pipeline.deployments import (
    ADAPTERS,
    BLOCK,
    GUARD_CAP,
    REDACT,
    SCRUBBED,
    Deployment,
    deploy,
    oracle,
)

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module", params=ADAPTERS)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    with deploy(request.param) as deployed:
        yield deployed


@dataclass
class Fetched:
    status: int
    headers: httpx.Headers
    body: bytes
    cut: bool

    def json(self) -> dict[str, str]:
        document: dict[str, str] = json.loads(self.body)
        return document


def fresh_id() -> str:
    return "pipe-" + secrets.token_hex(8)


def marker() -> str:
    """A unique string put in a body: it must never reach the audit log."""
    return "mk" + secrets.token_hex(6)


def call(
    deployment: Deployment,
    path: str,
    request_id: str,
    *,
    body: bytes | list[bytes] | None = None,
    gate: threading.Event | None = None,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """One request; reads the response as it streams, noting a cut instead of raising.

    ``body`` as a list is sent chunked, one chunk each; ``gate`` is set at the first byte.
    """
    content: bytes | Iterator[bytes] | None = iter(body) if isinstance(body, list) else body
    got = bytearray()
    cut = False
    with (
        deployment.client() as client,
        client.stream(
            "POST" if body is not None else "GET",
            path,
            headers={**deployment.auth(request_id), **(headers or {})},
            content=content,
        ) as response,
    ):
        try:
            for piece in response.iter_raw():
                got += piece
                if gate is not None and got:
                    gate.set()
        except (httpx.RemoteProtocolError, httpx.ReadError):
            cut = True
    return Fetched(response.status_code, response.headers, bytes(got), cut)


def assert_audited(
    deployment: Deployment,
    request_id: str,
    *,
    direction: str,
    decision: str,
    reason: str,
    secret: str,
) -> None:
    """One ``review.verdict`` event of this request, naming the principal, never the content."""
    events = deployment.review_events(request_id, wait_for=1)
    assert [(e["decision"], e["reason"], e["detail"]["direction"]) for e in events] == [
        (decision, reason, direction)
    ]
    event = events[0]
    assert event["actor"] == deployment.actor
    assert event["detail"]["reviewer"] == "token_screen"
    assert event["service"] == deployment.service
    logged = deployment.audit_text()
    for content in (secret, BLOCK, REDACT):
        assert content.encode() not in logged


# -- adapter reviewers (/own) ---------------------------------------------------------------


def test_a_blocked_request_body_never_reaches_the_app(deployment: Deployment) -> None:
    deployment.script.reset()
    request_id, secret = fresh_id(), marker()
    got = call(deployment, "/own/notes", request_id, body=f"{secret} {BLOCK}".encode())
    assert got.status == 403
    assert (got.json()["error"], got.json()["reviewer"]) == ("request_blocked", "token_screen")
    assert deployment.script.received == []
    assert secret not in got.body.decode()
    assert_audited(
        deployment, request_id, direction="in", decision="deny", reason="dirty_token", secret=secret
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_redacted_request_body_reaches_the_app_with_its_new_length(
    deployment: Deployment, chunked: bool
) -> None:
    deployment.script.reset()
    request_id, secret = fresh_id(), marker()
    sent = f"note {secret} key={REDACT};".encode()
    body: bytes | list[bytes] = [sent[:7], sent[7:]] if chunked else sent
    got = call(deployment, "/own/notes", request_id, body=body)
    assert got.status == 200
    [received] = deployment.script.received
    assert received.body == f"note {secret} key={SCRUBBED};".encode()
    if not chunked:  # a chunked body's framing has its own test below
        assert received.content_length == (str(len(received.body)),)
    assert_audited(
        deployment, request_id, direction="in", decision="allow", reason="secret_token",
        secret=secret,
    )  # fmt: skip


def test_a_response_blocked_before_anything_was_sent_is_a_403(deployment: Deployment) -> None:
    secret = marker()
    deployment.script.reset([f"hello {secret} {BLOCK} world".encode()])
    request_id = fresh_id()
    got = call(deployment, "/own/notes", request_id)
    assert got.status == 403
    assert (got.json()["error"], got.json()["reviewer"]) == ("response_blocked", "token_screen")
    assert BLOCK not in got.body.decode() and secret not in got.body.decode()
    assert_audited(
        deployment, request_id, direction="out", decision="deny", reason="dirty_token",
        secret=secret,
    )  # fmt: skip


@pytest.mark.parametrize("declare_length", [True, False], ids=["length", "no-length"])
def test_a_redacted_response_reaches_the_client_rewritten(
    deployment: Deployment, declare_length: bool
) -> None:
    secret = marker()
    deployment.script.reset([f"a {secret} {REDACT} b".encode()], declare_length=declare_length)
    request_id = fresh_id()
    got = call(deployment, "/own/notes", request_id)
    assert (got.status, got.cut) == (200, False)
    assert got.body == f"a {secret} {SCRUBBED} b".encode()
    if "content-length" in got.headers:
        assert int(got.headers["content-length"]) == len(got.body)
    assert_audited(
        deployment, request_id, direction="out", decision="allow", reason="secret_token",
        secret=secret,
    )  # fmt: skip


def test_a_response_blocked_mid_stream_is_cut_before_the_dirty_bytes(
    deployment: Deployment,
) -> None:
    secret = marker()
    clean = b"a" * 4096
    gate = threading.Event()
    deployment.script.reset(
        [clean, f"more {secret} {BLOCK} tail".encode(), b"z" * 64], declare_length=False, gate=gate
    )
    request_id = fresh_id()
    got = call(deployment, "/own/notes", request_id, gate=gate)
    assert gate.is_set(), "the first window never reached the client"
    assert got.status == 200
    assert got.cut, "the stream ended cleanly: the client cannot tell it was cut"
    assert got.body and clean.startswith(got.body)
    assert_audited(
        deployment, request_id, direction="out", decision="deny", reason="dirty_token",
        secret=secret,
    )  # fmt: skip


# -- the guard's reviewers (/guard), turned off (/off), none at all (/none) -----------------


def test_guard_reviewers_apply_when_the_adapter_passes_none(deployment: Deployment) -> None:
    deployment.script.reset([f"x {REDACT} y".encode()])
    request_id, secret = fresh_id(), marker()
    got = call(deployment, "/guard/notes", request_id, body=f"{secret} {BLOCK}".encode())
    assert got.status == 403 and got.json()["error"] == "request_blocked"
    assert deployment.script.received == []
    assert_audited(
        deployment, request_id, direction="in", decision="deny", reason="dirty_token", secret=secret
    )
    got = call(deployment, "/guard/notes", fresh_id())
    assert (got.status, got.body) == (200, f"x {SCRUBBED} y".encode())
    over = call(deployment, "/guard/notes", fresh_id(), body=b"a" * (GUARD_CAP + 1))
    assert over.status == 403 and over.json()["review_reason"] == "over_size_cap"


@pytest.mark.parametrize("where", ["off", "none"])
def test_without_reviewers_bodies_pass_untouched_at_any_size(
    deployment: Deployment, where: str
) -> None:
    answer = f"x {REDACT} {BLOCK} y".encode()
    deployment.script.reset([answer])
    request_id = fresh_id()
    big = (f"{REDACT} {BLOCK} ".encode() * 1024) * 160  # 2 MiB: over every review cap
    got = call(deployment, f"/{where}/notes", request_id, body=big)
    assert (got.status, got.body) == (200, answer)
    [received] = deployment.script.received
    assert received.body == big
    assert deployment.review_events(request_id, seconds=0) == []


# -- framing and codings: what the app reads is what was reviewed ---------------------------


def known_bug(
    request: pytest.FixtureRequest, deployment: Deployment, adapters: tuple[str, ...], reason: str
) -> None:
    """Mark this run as an expected failure when it runs against one of ``adapters``."""
    # Every bug this marked is fixed; kept so a regression found later can be recorded the
    # same way (a strict xfail naming the place).
    del request, deployment, adapters, reason


@pytest.mark.parametrize("redacted", [False, True], ids=["clean", "redacted"])
def test_a_chunked_request_reaches_the_app_with_one_framing(
    request: pytest.FixtureRequest, deployment: Deployment, redacted: bool
) -> None:
    known_bug(
        request,
        deployment,
        ("asgi", "mcp", "wsgi", "flask") if redacted else ("wsgi", "flask"),
        "a reviewed chunked body is handed on with Content-Length added but Transfer-Encoding:"
        " chunked kept (asgi/reviewed.py _review_request; wsgi/reviewed.py call_reviewed sets"
        " CONTENT_LENGTH even when nothing changed): RFC 9112 6.3 forbids sending both",
    )
    deployment.script.reset()
    sent = f"note key={REDACT if redacted else 'plain'};".encode()
    got = call(deployment, "/own/notes", fresh_id(), body=[sent[:7], sent[7:]])
    assert got.status == 200
    [received] = deployment.script.received
    assert received.body == oracle(sent)
    assert not (received.content_length and received.transfer_encoding), received


def test_a_compressed_request_body_is_never_passed_on_unreviewed(
    request: pytest.FixtureRequest, deployment: Deployment
) -> None:
    known_bug(
        request,
        deployment,
        ("asgi", "mcp", "wsgi", "flask"),
        "only the proxy refuses a Content-Encoding request body (415, asgi/upload.py"
        " check_content_encoding); the middleware, WSGI and MCP review the gzip bytes, find"
        " nothing, and hand the compressed dirty body to the app",
    )
    deployment.script.reset()
    dirty = gzip.compress(f"note {BLOCK}".encode())
    got = call(
        deployment, "/own/notes", fresh_id(), body=dirty, headers={"Content-Encoding": "gzip"}
    )
    assert got.status in (403, 415)
    assert deployment.script.received == []


def test_a_compressed_response_is_reviewed_as_the_client_reads_it(
    request: pytest.FixtureRequest, deployment: Deployment
) -> None:
    known_bug(
        request,
        deployment,
        ("asgi", "mcp", "wsgi", "flask"),
        "response review reads the app's gzip bytes as they are (asgi/reviewed.py _ReviewedSend,"
        " wsgi/reviewed.py _ReviewedBody); the client decompresses and reads the blocked text."
        " The proxy decodes first and refuses codings it cannot decode",
    )
    deployment.script.reset(
        [gzip.compress(f"answer {BLOCK}".encode())], extra=[("content-encoding", "gzip")]
    )
    got = call(deployment, "/own/notes", fresh_id())
    readable = got.body
    if got.status == 200 and got.headers.get("content-encoding") == "gzip":
        readable = gzip.decompress(got.body)
    assert BLOCK.encode() not in readable
    assert got.status in (403, 502)


# -- hypothesis: any body, any chunking, against the whole-body oracle ----------------------

pieces = st.lists(
    st.sampled_from(["a", "b", " ", "E", "V", "I", "L", "S", "C", "R", "T", BLOCK, REDACT]),
    max_size=60,
).map("".join)


def split(text: str, cuts: list[int]) -> list[bytes]:
    """``text`` cut at ``cuts`` (positions, any order), as non-empty byte chunks."""
    points = sorted({cut % (len(text) + 1) for cut in cuts} | {0, len(text)})
    chunks = [text[a:b].encode() for a, b in itertools.pairwise(points)]
    return [chunk for chunk in chunks if chunk] or [b""]


@EXAMPLES
@given(text=pieces, cuts=st.lists(st.integers(0, 200), max_size=6), chunked=st.booleans())
def test_any_request_body_reaches_the_app_as_the_oracle_says(
    deployment: Deployment, text: str, cuts: list[int], chunked: bool
) -> None:
    deployment.script.reset()
    body = text.encode()
    expected = oracle(body)
    sent: bytes | list[bytes] = split(text, cuts) if chunked else body
    got = call(deployment, "/own/notes", fresh_id(), body=sent)
    if expected is None:
        assert got.status == 403 and got.json()["error"] == "request_blocked"
        assert deployment.script.received == []
        return
    assert got.status == 200
    [received] = deployment.script.received
    assert received.body == expected
    if received.content_length:
        assert received.content_length == (str(len(expected)),)


@EXAMPLES
@given(text=pieces, cuts=st.lists(st.integers(0, 200), max_size=6), declare=st.booleans())
def test_any_response_stream_reaches_the_client_as_the_oracle_says(
    deployment: Deployment, text: str, cuts: list[int], declare: bool
) -> None:
    body = text.encode()
    deployment.script.reset(split(text, cuts), declare_length=declare)
    got = call(deployment, "/own/notes", fresh_id())
    expected = oracle(body)
    if expected is not None:
        assert (got.status, got.cut, got.body) == (200, False, expected)
        return
    if got.status == 403:
        assert got.json()["error"] == "response_blocked"
        return
    redacted = body.replace(REDACT.encode(), SCRUBBED.encode())
    assert got.status == 200 and got.cut
    assert redacted.startswith(got.body) and BLOCK.encode() not in got.body
