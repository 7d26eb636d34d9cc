"""Request smuggling and size caps, over real sockets: uvicorn (h11) in front of the proxy.

The gateway serves three proxies on loopback: ``/crm`` (base ``/v2``, key in ``X-Api-Key``),
``/auto`` (base ``/hooks``, key in the ``api_key`` query parameter) and ``/reviewed`` (base
``/v2`` of the CRM again, with a request reviewer capped at 1 KiB). Both fake vendors are
uvicorn servers of their own, so a request the proxy framed badly would show up there as an
extra, smuggled request. Every case is sent as raw bytes and checked for: no 5xx except the
proxy's 502/504; nothing at an upstream outside its base path; never the placeholder; never a
second request the agent smuggled.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import CredentialOwner, CredentialScope, Guard, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.review import ReviewChain, SecretLeakReviewer
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeUpstream, RecordedRequest, make_user
from tests.support.servers import LoopbackServer

CRM_KEY = "crm-real-" + secrets.token_urlsafe(16)
AUTO_KEY = "auto-real-" + secrets.token_urlsafe(16)
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass
class Gateway:
    url: str
    port: int
    key: str
    crm: FakeUpstream
    auto: FakeUpstream
    proxies: list[ProxyApp]
    crm_host: str

    def clear(self) -> None:
        time.sleep(0.05)  # a request cut off by an earlier case may still be landing upstream
        self.crm.requests.clear()
        self.auto.requests.clear()

    def received(self) -> list[tuple[str, RecordedRequest]]:
        return [("/v2", r) for r in self.crm.requests] + [("/hooks", r) for r in self.auto.requests]


async def _build(crm_url: str, auto_url: str) -> tuple[Starlette, str, list[ProxyApp]]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    crm = ServiceConfig(
        name="crm",
        base_url=crm_url + "/v2",
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
    )
    auto = ServiceConfig(
        name="auto",
        base_url=auto_url + "/hooks",
        placement=Placement.QUERY,
        parameter="api_key",
        allow_insecure_http=True,
    )
    reviewed = crm.model_copy(update={"name": "reviewed"})
    swapper = CredentialSwapper(vault, clock=clock)
    guard = Guard(store, clock=clock, services=[crm, auto, reviewed], swapper=swapper)
    swapper.audit = guard.audit
    user = await make_user(store, grants="crm:write auto:write reviewed:write")
    keys = await guard.issuer.issue(user.id, "ws-1")
    for name, value in (("crm", CRM_KEY), ("auto", AUTO_KEY), ("reviewed", CRM_KEY)):
        await vault.put(name, CredentialOwner.USER, user.id, value, scope=CredentialScope.USER)
    proxies = [
        ProxyApp(guard, "crm"),
        ProxyApp(guard, "auto"),
        ProxyApp(
            guard, "reviewed", request_reviewers=ReviewChain([SecretLeakReviewer()], max_bytes=1024)
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for proxy in proxies:  # close the pooled upstream connections in the server's loop
            await proxy.aclose()

    app = Starlette(routes=[Mount(f"/{p.service.name}", app=p) for p in proxies], lifespan=lifespan)
    return app, keys.access_key.reveal(), proxies


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    crm = FakeUpstream("crm", accepted={CRM_KEY}, header="x-api-key")
    auto = FakeUpstream("auto", accepted={AUTO_KEY}, query="api_key")
    with LoopbackServer(crm) as crm_server, LoopbackServer(auto) as auto_server:
        app, key, proxies = anyio.run(_build, crm_server.url, auto_server.url)
        with LoopbackServer(app, lifespan="on") as server:
            host = crm_server.url.removeprefix("http://")
            yield Gateway(server.url, server.port, key, crm, auto, proxies, host)


def exchange(gateway: Gateway, raw: bytes, timeout: float = 1.5) -> bytes:
    """Send ``raw`` on one connection; read until the server closes it (or goes quiet)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def statuses(response: bytes) -> list[int]:
    return [int(m.group(1)) for m in STATUS_LINE.finditer(response)]


def check_upstreams(gateway: Gateway, *, at_most: int = 1) -> list[RecordedRequest]:
    """The shared promises: within base, no placeholder, no smuggled extra request."""
    seen = gateway.received()
    assert len(seen) <= at_most, [r.path for _, r in seen]
    for base, request in seen:
        path = request.path
        assert path == base or path.startswith(base + "/"), path
        decoded = unquote(path)
        assert ".." not in decoded.split("/"), path
        assert gateway.key not in request.raw, "the placeholder reached the upstream"
        assert "/smuggled" not in path.split("?")[0], request.raw  # a request of its own
    return [r for _, r in seen]


def request(
    gateway: Gateway,
    target: str,
    *,
    method: str = "GET",
    extra: bytes = b"",
    body: bytes = b"",
    key_header: bool = True,
) -> bytes:
    key = f"X-Api-Key: {gateway.key}\r\n" if key_header else ""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        f"{key}Connection: close\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


SMUGGLED = b"GET /crm/smuggled HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n"


def smuggled(gateway: Gateway) -> bytes:
    return SMUGGLED.replace(b"{key}", gateway.key.encode())


# ---------------------------------------------------------------------------------------------
# Framing: Content-Length and Transfer-Encoding

FRAMING_CASES = {
    "CL.TE": (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n{smuggled}"),
    "TE.CL": (b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", b"0\r\n\r\n{smuggled}"),
    "TE obfuscated (chunked, identity)": (
        b"Transfer-Encoding: chunked, identity\r\nContent-Length: 5\r\n",
        b"0\r\n\r\n{smuggled}",
    ),
    "TE unknown (xchunked)": (
        b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
        b"0\r\n\r\n{smuggled}",
    ),
    "TE twice": (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        b"0\r\n\r\n{smuggled}",
    ),
    "TE with space before colon": (
        b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
        b"0\r\n\r\n{smuggled}",
    ),
    "duplicate CL, different": (b"Content-Length: 5\r\nContent-Length: 60\r\n", b"hello{smuggled}"),
    "duplicate CL, same": (b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    "CL list": (b"Content-Length: 5, 60\r\n", b"hello{smuggled}"),
    "CL negative": (b"Content-Length: -5\r\n", b"hello"),
    "CL plus sign": (b"Content-Length: +5\r\n", b"hello"),
    "CL too short": (b"Content-Length: 2\r\n", b"hello{smuggled}"),
    "chunk size overflow": (
        b"Transfer-Encoding: chunked\r\n",
        b"ffffffffffffffffffff1\r\nx\r\n0\r\n\r\n",
    ),
    "chunk with bad extension": (
        b"Transfer-Encoding: chunked\r\n",
        b"5;\x00\r\nhello\r\n0\r\n\r\n",
    ),
    "bare LF line endings": (b"Transfer-Encoding: chunked\n", b"5\nhello\n0\n\n{smuggled}"),
}


@pytest.mark.parametrize("case", sorted(FRAMING_CASES))
def test_conflicting_framing_never_smuggles(gateway: Gateway, case: str) -> None:
    headers, body = FRAMING_CASES[case]
    gateway.clear()
    raw = request(
        gateway,
        "/crm/items",
        method="POST",
        extra=headers,
        body=body.replace(b"{smuggled}", smuggled(gateway)),
    )
    response = exchange(gateway, raw)
    codes = statuses(response)
    assert codes, response[:200]
    assert all(c < 500 or c in (502, 504) for c in codes), response[:300]
    assert codes[0] in (200, 400, 411, 413, 501), response[:300]
    seen = check_upstreams(gateway)
    for recorded in seen:  # what went upstream is one well-framed request, nothing after it
        assert b"smuggled" not in recorded.body or codes[0] == 200
        assert recorded.path == "/v2/items"


def test_conflicting_framing_outcomes(gateway: Gateway) -> None:
    """Pins uvicorn/h11's verdicts, so a server change that starts accepting them is noticed."""
    outcomes: dict[str, int] = {}
    for case, (headers, body) in FRAMING_CASES.items():
        gateway.clear()
        raw = request(
            gateway,
            "/crm/items",
            method="POST",
            extra=headers,
            body=body.replace(b"{smuggled}", smuggled(gateway)),
        )
        outcomes[case] = statuses(exchange(gateway, raw))[0]
    refused = {case for case, code in outcomes.items() if code >= 400}
    # RFC 9112 §6.3: Transfer-Encoding wins and an intermediary drops Content-Length before
    # forwarding, which the proxy does: one well-framed request goes upstream.
    assert outcomes["CL.TE"] == outcomes["TE.CL"] == 200
    assert outcomes["chunk with bad extension"] == 200  # h11 ignores chunk extensions
    assert {
        "TE obfuscated (chunked, identity)",
        "TE unknown (xchunked)",
        "TE twice",
        "TE with space before colon",
        "duplicate CL, different",
        "CL list",
        "CL negative",
        "CL plus sign",
        "chunk size overflow",
        "bare LF line endings",
    } <= refused, outcomes


def test_pipelined_second_request_is_a_request_of_its_own(gateway: Gateway) -> None:
    """A well-framed pipeline is two requests, each authenticated; never merged upstream."""
    gateway.clear()
    first = (
        f"POST /crm/items HTTP/1.1\r\nHost: x\r\nX-Api-Key: {gateway.key}\r\n"
        "Content-Length: 5\r\n\r\nhello"
    ).encode()
    second = b"GET /crm/smuggled-without-key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = exchange(gateway, first + second)
    assert statuses(response) == [200, 401]
    (recorded,) = gateway.crm.requests
    assert (recorded.path, recorded.body) == ("/v2/items", b"hello")


# ---------------------------------------------------------------------------------------------
# CR/LF in headers and targets

CRLF_CASES = {
    "obs-fold continuation": b"X-Note: a\r\n Transfer-Encoding: chunked\r\n",
    "bare CR in a value": b"X-Note: a\rTransfer-Encoding: chunked\r\n",
    "bare LF in a value": b"X-Note: a\nX-Injected: yes\r\n",
    "NUL in a value": b"X-Note: a\x00b\r\n",
    "space in a name": b"X Note: a\r\n",
    "empty name": b": a\r\n",
}


@pytest.mark.parametrize("case", sorted(CRLF_CASES))
def test_crlf_in_headers_is_refused_or_harmless(gateway: Gateway, case: str) -> None:
    gateway.clear()
    response = exchange(gateway, request(gateway, "/crm/items", extra=CRLF_CASES[case]))
    codes = statuses(response)
    assert codes and codes[0] in (200, 400), response[:300]
    for recorded in check_upstreams(gateway):
        names = [name for name, _ in recorded.headers]
        assert "transfer-encoding" not in names
        assert all("\r" not in v and "\n" not in v for _, v in recorded.headers)


@pytest.mark.parametrize(
    "target",
    [
        "/crm/a%0d%0aX-Injected:%20yes",
        "/crm/a%0aGET%20/crm/smuggled%20HTTP/1.1",
        "/crm/items?q=%0d%0aX-Injected:%20yes",
        "/auto/run?x=1%0d%0a%0d%0aGET%20/hooks/smuggled",
    ],
)
def test_encoded_crlf_in_target_stays_encoded(gateway: Gateway, target: str) -> None:
    gateway.clear()
    in_query = target.startswith("/auto")
    if in_query:
        target += "&api_key=" + gateway.key
    response = exchange(gateway, request(gateway, target, key_header=not in_query))
    codes = statuses(response)
    assert codes and codes[0] in (200, 400, 404), response[:300]
    for recorded in check_upstreams(gateway):
        assert "x-injected" not in [name for name, _ in recorded.headers]
        assert "\r" not in recorded.path and "\n" not in recorded.path
        assert "\r" not in recorded.query and "\n" not in recorded.query


# ---------------------------------------------------------------------------------------------
# Absolute-URI targets and paths that try to escape the base URL

ESCAPES = [
    "http://evil.example/x",
    "http://evil.example/crm/items",
    "https://127.0.0.1/crm/items",
    "//evil.example/crm/items",
    "/crm//evil.example/x",
    "/crm/@evil.example/x",
    "/crm/http://evil.example/x",
    "/crm/../auto/run",
    "/crm/..",
    "/crm/items/..",
    "/crm/./items",
    "/crm/%2e%2e/auto/run",
    "/crm/%2E%2E/%2E%2E/hooks",
    "/crm/.%2e/auto",
    "/crm/%2e./auto",
    "/crm/..%2fauto%2frun",
    "/crm/%2e%2e%2fauto%2frun",
    "/crm/%2e%2e%5cauto",
    "/crm/..\\auto",
    "/crm/%252e%252e/auto",
    "/crm/%c0%ae%c0%ae/auto",
    "/crm/%00/../auto",
    "/crm/items%23/../../x",
    "/crm/items#/../../x",
    "/crm/items;/../../x",
    "/crm%2f..%2fauto/run",
    "/crm%2fitems",
    "/auto/%2e%2e/v2/items",
    "/auto/..%2F..%2Fv2",
    "*",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_no_path_escapes_the_base_url(gateway: Gateway, target: str) -> None:
    gateway.clear()
    response = exchange(gateway, request(gateway, target))
    codes = statuses(response)
    assert codes, response[:200]
    assert codes[0] < 500 or codes[0] in (502, 504), response[:300]
    seen = check_upstreams(gateway)
    assert not gateway.auto.requests  # the key went in a header: /auto never authenticates
    for recorded in seen:
        assert recorded.header("host") == gateway.crm_host, recorded.headers


def test_absolute_form_targets_never_leave_the_configured_host(gateway: Gateway) -> None:
    gateway.clear()
    response = exchange(gateway, request(gateway, "http://evil.example/crm/items"))
    assert statuses(response)[0] in (400, 404), response[:300]
    assert gateway.crm.requests == []


def test_connect_is_refused(gateway: Gateway) -> None:
    gateway.clear()
    response = exchange(gateway, request(gateway, "evil.example:443", method="CONNECT"))
    codes = statuses(response)
    assert codes and codes[0] in (400, 404, 405), response[:300]
    assert gateway.received() == []


def test_non_ascii_target_is_refused(gateway: Gateway) -> None:
    gateway.clear()
    raw = request(gateway, "/crm/x").replace(b"/crm/x", b"/crm/\xff\xfe", 1)
    response = exchange(gateway, raw)
    codes = statuses(response)
    assert not codes or codes[0] < 500, response[:300]  # uvicorn's own decoding
    assert gateway.received() == []


# ---------------------------------------------------------------------------------------------
# Size caps

H11_DEFAULT_MAX_EVENT = 16 * 1024  # h11's max_incomplete_event_size; uvicorn keeps the default


def send_slowly(gateway: Gateway, raw: bytes, piece: int = 4096) -> bytes:
    """Send ``raw`` in small writes, as a slow client would; the server may cut us off."""
    response = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        try:
            for i in range(0, len(raw), piece):
                sock.sendall(raw[i : i + piece])
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                response += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return response


def test_header_block_cap_is_h11s_16_kib(gateway: Gateway) -> None:
    """h11 refuses a request head that stays incomplete past 16 KiB.

    Measured: the cap applies to the *buffered, incomplete* head, so a head that arrives in
    one read is parsed whatever its size up to what one read returns (a 100 KiB header in one
    loopback write was accepted; 200 KiB was refused). Trickled in 4 KiB writes, 32 KiB is
    refused. Put a front proxy with a hard header limit before the gateway if that matters.
    """
    gateway.clear()
    pad = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    assert statuses(exchange(gateway, request(gateway, "/crm/items", extra=pad)))[0] == 200
    big = b"X-Pad: " + b"a" * (2 * H11_DEFAULT_MAX_EVENT) + b"\r\n"
    response = send_slowly(gateway, request(gateway, "/crm/items", extra=big))
    assert not statuses(response) or statuses(response)[0] in (400, 431), response[:300]
    many = b"".join(f"X-H{i}: {'b' * 40}\r\n".encode() for i in range(800))  # about 38 KiB
    response = send_slowly(gateway, request(gateway, "/crm/items", extra=many))
    assert not statuses(response) or statuses(response)[0] in (400, 431), response[:300]
    huge = b"X-Pad: " + b"a" * (1024 * 1024) + b"\r\n"
    response = send_slowly(gateway, request(gateway, "/crm/items", extra=huge), piece=65536)
    assert not statuses(response) or statuses(response)[0] in (400, 431), response[:300]
    assert len(gateway.crm.requests) == 1


def test_long_target_is_capped_too(gateway: Gateway) -> None:
    gateway.clear()
    target = "/crm/" + "a" * (4 * H11_DEFAULT_MAX_EVENT)
    response = send_slowly(gateway, request(gateway, target))
    assert not statuses(response) or statuses(response)[0] in (400, 414, 431), response[:300]
    assert gateway.received() == []


def test_reviewer_cap_blocks_a_body_over_it(gateway: Gateway) -> None:
    gateway.clear()
    body = b"x" * 2048
    extra = f"Content-Length: {len(body)}\r\n".encode()
    response = exchange(
        gateway, request(gateway, "/reviewed/items", method="POST", extra=extra, body=body)
    )
    assert statuses(response)[0] == 403, response[:300]
    assert b"over_size_cap" in response
    assert gateway.received() == []
    ok = b"y" * 1000
    extra = f"Content-Length: {len(ok)}\r\n".encode()
    response = exchange(
        gateway, request(gateway, "/reviewed/items", method="POST", extra=extra, body=ok)
    )
    assert statuses(response)[0] == 200


def test_proxy_caps_request_bodies(gateway: Gateway) -> None:
    """A body over the service's cap (10 MiB by default) is refused with 413.

    Declared in ``Content-Length``: refused before any of it is read, nothing goes upstream.
    Streamed (chunked, no length): refused as soon as the cap is passed, and the upstream never
    receives a complete request.
    """
    gateway.clear()
    size = 32 * 1024 * 1024
    head = request(
        gateway, "/crm/items", method="POST", extra=f"Content-Length: {size}\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(head)
        response = sock.recv(65536)
    assert statuses(response)[0] == 413, response[:300]
    assert gateway.crm.requests == []

    chunk = b"z" * (1024 * 1024)
    head = request(gateway, "/crm/items", method="POST", extra=b"Transfer-Encoding: chunked\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for _ in range(16):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the gateway may close the connection once it has refused
        response = b""
        while True:
            try:
                piece = sock.recv(65536)
            except OSError:
                break
            if not piece:
                break
            response += piece
    assert statuses(response)[0] == 413, response[:300]
    assert all(len(recorded.body) <= 10 * 1024 * 1024 for recorded in gateway.crm.requests)
