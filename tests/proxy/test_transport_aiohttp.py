"""AiohttpTransport behaves as httpx's own transport where the proxy depends on it.

Each test runs the same exchange through both transports against a raw loopback server that
records the request head byte for byte and answers with scripted bytes: the request that goes
out, the failures that come back (as the same ``httpx`` exception types), the chunking of a large
body; and the pooled client keeps no cookie between users.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc
import httpx
import pytest

from agentguard._httpclient import AiohttpTransport, LazyClient, proxy_transport
from agentguard.testing import FakeUpstream, RecordedRequest
from tests.proxy.sockets import socket_gateway

pytest.importorskip("aiohttp")
pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@dataclass
class RawServer:
    url: str
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def raw_server(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[RawServer]:
    """One request per connection: record its head and body, send ``answer(head)``, close
    (``None``: answer nothing and hold the connection until the test ends)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    server = RawServer(f"http://127.0.0.1:{port}")

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.lower().split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            while len(body) < length:
                body += await stream.receive()
            server.heads.append(head)
            server.bodies.append(body)
            reply = answer(head)
            if reply is None:
                await anyio.sleep_forever()
                return
            await stream.send(reply)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield server
        group.cancel_scope.cancel()


def transports() -> list[tuple[str, Callable[[], httpx.AsyncBaseTransport]]]:
    return [("httpx", httpx.AsyncHTTPTransport), ("aiohttp", AiohttpTransport)]


@pytest.fixture(params=transports(), ids=lambda pair: pair[0])
def make_transport(
    request: pytest.FixtureRequest,
) -> Callable[[], httpx.AsyncBaseTransport]:
    factory: Callable[[], httpx.AsyncBaseTransport] = request.param[1]
    return factory


def _flattened(error: BaseException) -> str:
    """Every message in ``error`` and, for an exception group, in its members."""
    members = getattr(error, "exceptions", ())
    return " | ".join([repr(error), *(_flattened(member) for member in members)])


def _fields(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    line, *rest = head.split(b"\r\n")
    pairs = [item.partition(b":") for item in rest]
    return line, sorted((name.lower(), value.strip()) for name, _, value in pairs)


async def _exchange(transport: httpx.AsyncBaseTransport, url: str, **options: object) -> bytes:
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(2.0)) as client:
        request = client.build_request("POST", url, **options)  # type: ignore[arg-type]
        response = await client.send(request, stream=True)
        try:
            return await response.aread()
        finally:
            await response.aclose()


async def test_the_request_goes_out_exactly_as_httpx_sends_it() -> None:
    """Same target bytes (no re-quoting), same header fields, nothing added, same body."""
    target = "/v2/a%2Fb/%7Euser/x;p=1/%25/caf%C3%A9?q=a%20b&q=%2F"
    headers = [(b"X-Dup", b"one"), (b"X-Dup", b"two"), (b"Accept-Encoding", b"gzip, deflate")]
    seen: dict[str, tuple[bytes, list[tuple[bytes, bytes]], bytes]] = {}
    for name, factory in transports():
        async with raw_server(lambda _: OK) as server:
            await _exchange(factory(), server.url + target, headers=headers, content=b"payload")
        line, fields = _fields(server.heads[0])
        fields = [(k, v) for k, v in fields if k != b"host"]  # the port differs per server
        seen[name] = (line, fields, server.bodies[0])
    assert seen["aiohttp"] == seen["httpx"]
    assert seen["aiohttp"][0] == f"POST {target} HTTP/1.1".encode()
    assert (b"x-dup", b"one") in seen["aiohttp"][1] and (b"x-dup", b"two") in seen["aiohttp"][1]
    assert not any(name == b"content-type" for name, _ in seen["aiohttp"][1])


async def test_a_streamed_body_keeps_its_framing_and_bytes(
    make_transport: Callable[[], httpx.AsyncBaseTransport],
) -> None:
    parts = [b"a" * 70_000, b"b" * 10, b"c" * 5]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    length = str(sum(map(len, parts)))
    async with raw_server(lambda _: OK) as server:
        await _exchange(make_transport(), server.url + "/up", content=body(),
                        headers={"content-length": length})  # fmt: skip
    assert server.bodies == [b"".join(parts)]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"", httpx.RemoteProtocolError),  # closed without an answer
        (b"HTTP/1.1 abc nonsense\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", httpx.RemoteProtocolError),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxy",
            httpx.RemoteProtocolError,
        ),
    ],
    ids=["no-answer", "bad-status-line", "truncated-body", "two-lengths"],
)
async def test_a_broken_answer_is_the_same_httpx_error(
    make_transport: Callable[[], httpx.AsyncBaseTransport],
    reply: bytes,
    expected: type[httpx.HTTPError],
) -> None:
    async with raw_server(lambda _: reply) as server:
        with pytest.raises(expected):
            await _exchange(make_transport(), server.url + "/x", content=b"")


async def test_no_answer_in_time_is_a_timeout(
    make_transport: Callable[[], httpx.AsyncBaseTransport],
) -> None:
    async with (
        raw_server(lambda _: None) as server,
        httpx.AsyncClient(
            transport=make_transport(), timeout=httpx.Timeout(5.0, read=0.3)
        ) as client,
    ):
        with anyio.fail_after(5), pytest.raises(httpx.ReadTimeout):
            await client.get(server.url + "/slow")


async def test_nothing_listening_is_a_connect_error(
    make_transport: Callable[[], httpx.AsyncBaseTransport],
) -> None:
    async with raw_server(lambda _: OK) as server:
        url = server.url
    with pytest.raises(httpx.ConnectError):
        await _exchange(make_transport(), url + "/x", content=b"")


async def test_a_large_body_arrives_in_chunks_of_at_most_64_kib(
    make_transport: Callable[[], httpx.AsyncBaseTransport],
) -> None:
    body = b"z" * 300_000
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    async with (
        raw_server(lambda _: reply) as server,
        httpx.AsyncClient(transport=make_transport()) as client,
        client.stream("GET", server.url + "/big") as response,
    ):
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == len(body)
    assert max(sizes) <= 64 * 1024


def test_the_proxy_uses_aiohttp_when_it_is_installed() -> None:
    assert isinstance(proxy_transport(httpx.Limits()), AiohttpTransport)


async def test_the_created_client_keeps_no_cookie() -> None:
    sent: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=user-1; Path=/"})

    lazy = LazyClient(transport=httpx.MockTransport(answer))
    for _ in range(2):
        await lazy.client.get("http://vendor.test/x")
    await lazy.aclose()
    assert sent == [None, None]


async def test_a_cookie_set_for_one_user_never_reaches_another() -> None:
    async def answer(request: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        return 200, [("content-type", "application/json"), ("set-cookie", "s=first")], b"{}"

    crm = FakeUpstream("crm", respond=answer)
    async with socket_gateway(crm) as gateway, httpx.AsyncClient(base_url=gateway.url) as agent:
        for index in (0, 1, 1):
            got = await agent.get("/crm/contacts", headers={"X-Api-Key": gateway.key(index)})
            assert got.status_code == 200
            assert "set-cookie" not in got.headers
    assert [request.header("cookie") for request in crm.requests] == [None, None, None]


@pytest.mark.parametrize("sent", [16, 116], ids=["short", "long"])
async def test_a_body_that_breaks_its_content_length_never_reuses_the_connection(
    make_transport: Callable[[], httpx.AsyncBaseTransport], sent: int
) -> None:
    """Desync guard: a body of other than the declared length is a LocalProtocolError, and the
    next request (another user's, with their credential) goes out on a connection of its own."""
    connections: list[bytes] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        index = len(connections)
        connections.append(b"")
        async with stream:
            with anyio.move_on_after(1.0):
                while True:
                    try:
                        chunk = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                    connections[index] += chunk
                    for _ in range(chunk.count(b" HTTP/1.1\r\n")):  # answer each head at once
                        await stream.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")

    async def body() -> AsyncIterator[bytes]:
        yield b"A" * sent  # declared: 100

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio
    url = f"http://127.0.0.1:{port}"
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        transport = make_transport()
        async with httpx.AsyncClient(transport=transport) as client:
            framed = client.build_request(
                "POST", f"{url}/u0", headers={"content-length": "100"}, content=body()
            )
            # httpx's own transport raises h11's error from inside a task group (an exception
            # group); ours raises httpx.LocalProtocolError. Either way: refused, not sent on.
            with pytest.raises(BaseException) as refused:
                await client.send(framed)
            assert "declared Content-Length" in _flattened(refused.value)
            if isinstance(transport, AiohttpTransport):
                assert isinstance(refused.value, httpx.LocalProtocolError)
            secret = {"authorization": "Bearer REAL-CREDENTIAL-OF-USER-B"}
            answer = await client.get(f"{url}/u1", headers=secret)
            assert answer.status_code == 401
        await anyio.sleep(0.2)
        group.cancel_scope.cancel()
    carrying = [data for data in connections if b"REAL-CREDENTIAL" in data]
    assert len(carrying) == 1 and carrying[0].startswith(b"GET /u1 "), connections


@pytest.mark.parametrize("name", [b"bad name", b"x:y", b"x\x00y", b""])
async def test_a_header_name_that_is_no_token_is_refused(
    make_transport: Callable[[], httpx.AsyncBaseTransport], name: bytes
) -> None:
    async with raw_server(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
        transport = make_transport()
        request = httpx.Request("GET", server.url, headers=[(name, b"v")])
        with pytest.raises(BaseException) as refused:
            async with httpx.AsyncClient(transport=transport) as client:
                await client.send(request)
        assert server.heads == []  # nothing went out
        if isinstance(transport, AiohttpTransport):
            assert isinstance(refused.value, httpx.LocalProtocolError)
