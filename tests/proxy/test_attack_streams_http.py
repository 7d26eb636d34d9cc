"""Attacking streamed HTTP responses (server-sent events and plain streams) over real sockets.

A scripted upstream streams the injected credential in generated forms and chunkings; what
the agent received (raw bytes off the socket, and the ``data`` of each event as an
``EventSource`` joins it) is read by the independent oracle of
:mod:`tests.proxy.test_attack_streams_ws`. Also: a stream cut on revocation must close the
connection without a clean end, and a request pipelined behind it must not be answered.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import IssuedKeys
from agentguard.asgi import ProxyApp
from tests.proxy.sockets import CRM_KEY, _build
from tests.proxy.test_attack_streams_ws import _FORMS, SECRET, reveals
from tests.support.servers import LoopbackServer

DEADLINE = 5.0
Scope = dict[str, Any]


class ScriptedStreams:
    """An upstream that streams the chunks scripted under the path's last segment (a float in
    the chunks: pause that long), as ``text/event-stream`` unless the name starts ``plain``."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[bytes | float]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        name = scope["path"].rsplit("/", 1)[-1]
        media = b"text/plain" if name.startswith("plain") else b"text/event-stream"
        headers = [(b"content-type", media), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in self.scripts.get(name, []):
            if isinstance(part, float):
                await anyio.sleep(part)
            else:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Served:
    upstream: ScriptedStreams
    port: int
    keys: list[IssuedKeys]
    proxy: ProxyApp

    def key(self, index: int = 0) -> str:
        return self.keys[index].access_key.reveal()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    upstream = ScriptedStreams()
    with LoopbackServer(upstream) as vendor:
        app, keys, proxy = asyncio.run(_build(vendor.url, {}))
        with LoopbackServer(app, lifespan="on") as server:
            yield Served(upstream, server.port, keys, proxy)


_counter = iter(range(10**9))


def fetch(served: Served, chunks: list[bytes | float], *, plain: bool = False) -> bytes:
    """The body the agent read for ``chunks`` (whatever it got before a cut)."""
    name = f"{'plain' if plain else 'sse'}{next(_counter)}"
    served.upstream.scripts[name] = chunks
    received = bytearray()
    url = f"http://127.0.0.1:{served.port}/crm/streams/{name}"
    with httpx.Client(timeout=DEADLINE) as client:
        try:
            with client.stream("GET", url, headers={"X-Api-Key": served.key()}) as response:
                for piece in response.iter_raw():
                    received += piece
        except httpx.HTTPError:
            pass  # a cut stream: what arrived before counts
    return bytes(received)


def event_data(stream: bytes) -> list[str]:
    """Each event's ``data`` as an EventSource dispatches it (lines joined with ``\\n``)."""
    events: list[str] = []
    data: list[str] = []
    for line in (
        stream.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ):
        if not line:
            if data:
                events.append("\n".join(data))
            data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    return events


def shown(stream: bytes) -> str:
    """What an agent reading the stream can see: the bytes, and the data of its events."""
    return stream.decode("utf-8", "surrogateescape") + "\n".join(event_data(stream))


# Generated forms and chunkings of the credential in an event stream (held)


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[bool, list[bytes | float]]:
    """A form of the credential in a plain stream or in one data line of an event stream."""
    plain = draw(st.booleans())
    forms = sorted(_FORMS) if plain else sorted(set(_FORMS) - {"wrapped"})  # one line each
    form = draw(st.sampled_from(forms))
    filler = st.text(alphabet="abc {}:,.", max_size=20)
    data = draw(filler).encode() + _FORMS[form](SECRET) + draw(filler).encode()
    body = data if plain else b"data: first\n\ndata: " + data + b"\n\n"
    cuts = sorted(draw(st.sets(st.integers(1, len(body) - 1), max_size=10)))
    chunks: list[bytes | float] = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        chunks += [body[start:end], 0.002]  # each chunk on the wire alone
    return plain, chunks


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=chunkings())
def test_generated_chunkings_of_every_form_in_a_stream_never_reach_the_agent(
    served: Served, case: tuple[bool, list[bytes | float]]
) -> None:
    plain, chunks = case
    received = fetch(served, chunks, plain=plain)
    assert not reveals(shown(received), CRM_KEY)


# Found by review, fixed: a form spread by whitespace; a form cut across data lines.


def test_a_credential_spread_by_whitespace_across_chunks_is_caught(served: Served) -> None:
    chunks: list[bytes | float] = []
    for byte in SECRET:  # one character per chunk, each chunk on the wire alone
        chunks += [bytes([byte]) + b" " * 400, 0.003]
    received = fetch(served, chunks, plain=True)
    assert not reveals(shown(received), CRM_KEY)


@pytest.mark.parametrize("form", ["raw", "base64-wrapped"])
def test_a_credential_cut_across_the_data_lines_of_one_event_is_caught(
    served: Served, form: str
) -> None:
    data = SECRET if form == "raw" else base64.b64encode(SECRET)
    lines = b"\ndata: ".join(data[i : i + 11] for i in range(0, len(data), 11))
    received = fetch(served, [b"data: " + lines + b"\n\n", 0.05, b"data: end\n\n"])
    assert not reveals(shown(received), CRM_KEY)


# A cut stream: no clean end, nothing answered behind it (held)


def test_a_cut_stream_closes_the_connection_and_a_pipelined_request_is_not_answered(
    served: Served,
) -> None:
    name = f"sse{next(_counter)}"
    served.upstream.scripts[name] = [
        b"data: %d\n\n" % n if n % 2 == 0 else 0.05 for n in range(200)
    ]
    keys = served.keys[1]  # its own key: the revocation below must not touch other tests
    key, other = keys.access_key.reveal(), served.key(0)
    request = (
        f"GET /crm/streams/{name} HTTP/1.1\r\nHost: gw\r\nX-Api-Key: {key}\r\n\r\n"
        f"GET /crm/streams/{name} HTTP/1.1\r\nHost: gw\r\nX-Api-Key: {other}\r\n\r\n"
    ).encode()
    received = bytearray()
    with socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as agent:
        agent.sendall(request)
        while b"data: 0" not in received:
            received += agent.recv(65536)
        guard = served.proxy.guard

        async def revoke() -> None:
            await guard.issuer.revoke(key_id=keys.access.id)

        asyncio.run(revoke())
        guard.streams.changed(key_id=keys.access.id)
        deadline = time.monotonic() + DEADLINE
        while piece := agent.recv(65536):
            received += piece
            assert time.monotonic() < deadline
    assert received.count(b"HTTP/1.1 ") == 1  # the pipelined request was never answered
    assert b"event: error" in received
    assert b'"reason":"revoked"' in received
    assert not received.endswith(b"0\r\n\r\n")  # no clean end of the chunked body
