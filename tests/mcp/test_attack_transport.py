"""Attack: a reader's ``tools/call purge`` framed every way HTTP allows, over a raw socket to
AgentGuardMCP in front of the SDK's stateless app (which would run a call without a session).

Every combination of method, body framing (``Content-Length``, chunked, chunked over the cap),
``Content-Encoding``, ``Content-Type`` charset, body spelling and ``Mcp-Method``/``Mcp-Name``
headers must end with ``purge`` not run; a refusal is a 4xx, never a 5xx.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import Guard
from agentguard.integrations.mcp import AgentGuardMCP
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.mcp.tool_servers import notes_server
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

CAP = 4096
PURGE = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "purge"}}
SPELLINGS = [
    json.dumps(PURGE).encode(),
    b'{"jsonrpc":"2.0","id":1,"method":"tools\\u002fcall","params":{"name":"p\\u0075rge"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"purge"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_notes","name":"purge"}}',
    b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"purge"}}]',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"purge"}}' + b" " * CAP,
]


@dataclass
class World:
    port: int
    keys: dict[str, str]
    ran: list[str]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    ran: list[str] = []
    sdk = notes_server(ran).streamable_http_app(stateless_http=True, json_response=True)
    app = AgentGuardMCP(sdk, guard, service="notes", max_body_bytes=CAP)

    async def seed() -> dict[str, str]:
        keys = {}
        for user, grants in (("reader", "notes:read"), ("writer", "notes:write")):
            made = await make_user(store, user_id=user, grants=grants)
            keys[user] = (await guard.issuer.issue(made.id, "ws-1")).access_key.reveal()
        return keys

    keys = anyio.run(seed)
    with LoopbackServer(app, lifespan="on") as server:
        yield World(server.port, keys, ran)


async def _exchange(port: int, request: bytes) -> int:
    """Send ``request`` raw; the response status (0 when the server closed without one)."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            received = b""
            while b"\r\n" not in received:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    line = received.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def _request(
    port: int, method: bytes, key: str, extra: list[tuple[bytes, bytes]], payload: bytes
) -> bytes:
    headers = [
        (b"host", b"127.0.0.1:%d" % port),
        (b"authorization", b"Bearer " + key.encode()),
        (b"accept", b"application/json, text/event-stream"),
        (b"mcp-protocol-version", b"2025-06-18"),
        (b"connection", b"close"),
        *extra,
    ]
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return method + b" /mcp HTTP/1.1\r\n" + head + b"\r\n" + payload


def _chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from([b"POST", b"GET", b"DELETE", b"PUT", b"PATCH", b"OPTIONS"]),
    framing=st.sampled_from(["length", "chunked", "chunked-small"]),
    encoding=st.sampled_from([None, b"gzip", b"identity"]),
    charset=st.sampled_from([b"", b"; charset=utf-16", b"; charset=latin-1"]),
    spelling=st.sampled_from(SPELLINGS),
    routing=st.sampled_from([(), ((b"mcp-method", b"tools/list"),),
                             ((b"mcp-method", b"tools/call"), (b"mcp-name", b"list_notes"))]),
)  # fmt: skip
async def test_a_readers_purge_never_runs_however_it_is_framed(  # noqa: PLR0917 - drawn
    world: World,
    method: bytes,
    framing: str,
    encoding: bytes | None,
    charset: bytes,
    spelling: bytes,
    routing: tuple[tuple[bytes, bytes], ...],
) -> None:
    body = gzip.compress(spelling) if encoding == b"gzip" else spelling
    headers = [(b"content-type", b"application/json" + charset), *routing]
    if encoding is not None:
        headers.append((b"content-encoding", encoding))
    if framing == "length":
        headers.append((b"content-length", str(len(body)).encode()))
        payload = body
    else:
        headers.append((b"transfer-encoding", b"chunked"))
        payload = _chunked(body, 7 if framing == "chunked-small" else 1 << 20)
    before = world.ran.count("purge")
    status = await _exchange(
        world.port, _request(world.port, method, world.keys["reader"], headers, payload)
    )
    assert world.ran.count("purge") == before
    assert status == 0 or status < 500, status


async def test_the_plain_call_runs_for_a_writer(world: World) -> None:
    """The harness does run purge: the refusals above are the gate's, not broken requests."""
    body = SPELLINGS[0]
    extra = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    before = world.ran.count("purge")
    assert (
        await _exchange(
            world.port, _request(world.port, b"POST", world.keys["writer"], extra, body)
        )
        == 200
    )
    assert world.ran.count("purge") == before + 1
    assert (
        await _exchange(
            world.port, _request(world.port, b"POST", world.keys["reader"], extra, body)
        )
        == 403
    )
