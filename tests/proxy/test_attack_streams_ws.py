"""Attacking proxied websockets over real sockets: a vendor that writes raw frames.

The vendor is a raw-socket websocket server (handshake and frames written by hand), so it can
do what a compromised vendor would: cut the injected credential across messages, fragment
frames, interleave pings, compress without negotiating, answer with crafted handshake
headers, hide the rest of the credential in a close reason. The agent is the ``websockets``
client; the gateway is :class:`~agentguard.asgi.ProxyApp` under uvicorn.

The oracle is independent of the echo scanner: :func:`reveals` undoes whitespace, NULs,
percent-encoding and JSON escapes itself and decodes base64 and hex runs at every alignment,
then looks for the credential, its first or last twelve characters; it is applied to
*everything the agent received on the socket* (every message, in order, and the close reason).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import IssuedKeys
from agentguard.errors import Reason
from tests.proxy.sockets import CRM_KEY, _build
from tests.support.servers import LoopbackServer

pytest.importorskip("aiohttp")
pytest.importorskip("websockets")

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEADLINE = 5.0


# The vendor


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One unmasked (server) frame."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes([first, size])
    elif size < 65536:
        head = bytes([first, 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, 127]) + struct.pack("!Q", size)
    return head + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(8, struct.pack("!H", code) + reason)


@dataclass
class Script:
    """What the vendor does on one connection: extra handshake headers, then these frames."""

    frames: list[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)


class RawVendor:
    """A websocket vendor on loopback that plays the script named by the path's last segment
    and records what each connection received (raw bytes after the handshake)."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.received: dict[str, bytearray] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> RawVendor:
        self._thread.start()
        if not self._ready.wait(DEADLINE):
            raise RuntimeError("the raw vendor did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(DEADLINE)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *lines = head.split("\r\n")
            name = line.split(" ")[1].split("?")[0].rsplit("/", 1)[-1]
            script = self.scripts[name]
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
            accept = base64.b64encode(
                hashlib.sha1(fields["sec-websocket-key"].encode() + _GUID).digest()  # noqa: S324
            ).decode()
            answer = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
            )
            answer += "".join(f"{k}: {v}\r\n" for k, v in script.headers)
            writer.write(answer.encode("latin-1") + b"\r\n")
            for raw in script.frames:
                writer.write(raw)
                await writer.drain()
            got = self.received.setdefault(name, bytearray())
            while (payload := await asyncio.wait_for(_client_frame(reader), DEADLINE)) is not None:
                got += payload
        except (OSError, TimeoutError, asyncio.IncompleteReadError, KeyError):
            pass
        finally:
            writer.close()


async def _client_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The unmasked payload of the next data frame from the gateway; ``None`` at its close."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else bytes(4)
    data = await reader.readexactly(size)
    if first & 0x0F == 8:
        return None
    return bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))


# The independent oracle

_B64_RUN = re.compile(r"[A-Za-z0-9+/_=-]{16,}")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{16,}")
_JSON_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})|\\(.)")
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "/": "/", '"': '"', "\\": "\\"}


def _unjson(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return chr(int(match.group(1), 16))
        return _SIMPLE.get(match.group(2), match.group(0))

    undone = _JSON_ESCAPE.sub(one, text)
    return undone.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # pairs


def _readings(text: str) -> Iterator[str]:
    """``text`` as a reader who undoes NULs, whitespace, percent-encoding, JSON escapes sees it."""
    seen: set[str] = set()
    todo = [text, text.replace("\0", ""), "".join(text.replace("\0", "").split())]
    while todo:
        current = todo.pop()
        if current in seen or len(seen) > 64:
            continue
        seen.add(current)
        yield current
        for undo in (lambda t: unquote(t, errors="surrogateescape"), _unjson):
            done = undo(current)
            todo += [done, "".join(done.split())]


def _decoded_runs(text: str) -> Iterator[bytes]:
    for run in _B64_RUN.findall(text):
        standard = run.replace("-", "+").replace("_", "/").replace("=", "")
        for offset in range(4):
            piece = standard[offset:]
            piece = piece[: len(piece) // 4 * 4]
            if piece:
                yield base64.b64decode(piece)
    for run in _HEX_RUN.findall(text):
        for offset in range(2):
            piece = run[offset:]
            yield bytes.fromhex(piece[: len(piece) // 2 * 2])


def reveals(received: str, secret: str) -> bool:
    """Whether ``received`` shows ``secret`` or its first or last 12 characters to a reader."""
    pieces = (secret, secret[:12], secret[-12:])
    for reading in _readings(received):
        if any(piece in reading for piece in pieces):
            return True
        raw = secret.encode()
        if any(raw in decoded for decoded in _decoded_runs(reading)):
            return True
    return False


def test_the_oracle_sees_each_form_and_not_half_a_fragment() -> None:
    secret = CRM_KEY
    raw = secret.encode()
    for shown in (
        secret,
        secret[:12],
        "x" + base64.b64encode(b"u:" + raw).decode(),
        base64.urlsafe_b64encode(b"a" + raw).decode().rstrip("="),
        raw.hex().upper(),
        quote(secret, safe=""),
        "".join(f"\\u{ord(c):04x}" for c in secret),
        "\n  ".join(base64.b64encode(raw).decode()[i : i + 7] for i in range(0, 60, 7)),
    ):
        assert reveals(f"junk {shown} junk", secret), shown
    # The joint is a character no key holds, so a reader who drops the spaces cannot complete a
    # 12-character end from the other half (" and " did, whenever the key's 12th character was "a").
    assert not reveals(secret[:11] + " ~ " + secret[-11:], secret)
    for twelfth in "adn":
        near = secret[:11] + twelfth + secret[12:]
        assert not reveals(near[:11] + " ~ " + near[-11:], near)


# The gateway


@dataclass
class Served:
    vendor: RawVendor
    port: int
    keys: list[IssuedKeys]

    def key(self, index: int = 0) -> str:
        return self.keys[index].access_key.reveal()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with RawVendor() as vendor:
        app, keys, _ = asyncio.run(_build(vendor.url, {}))
        with LoopbackServer(app, lifespan="on") as server:
            yield Served(vendor, server.port, keys)


_OWN_REASONS = frozenset(reason.value for reason in Reason)


@dataclass
class Received:
    messages: list[str | bytes]
    close: tuple[int, str] | None

    def text(self) -> str:
        """What came from upstream, as one text: the messages, then the close reason unless it is
        the gateway's own (a reason code it wrote carries no upstream byte, and joined to the
        messages it could complete a fragment by chance: "crm-socket-" + "secret_echo_blocked"
        holds the key's first 12 characters whenever its 12th is "s")."""
        shown = [m if isinstance(m, str) else m.decode("utf-8", "surrogateescape") for m in self]
        reason = "" if self.close is None else self.close[1]
        return "".join(shown) + ("" if reason in _OWN_REASONS else reason)

    def __iter__(self) -> Iterator[str | bytes]:
        return iter(self.messages)


_counter = iter(range(10**9))


def play(served: Served, script: Script, *, send: tuple[str | bytes, ...] = ()) -> Received:
    """Run ``script`` on a fresh socket through the gateway; what the agent received."""
    name = f"s{next(_counter)}"
    served.vendor.scripts[name] = script

    async def agent() -> Received:
        messages: list[str | bytes] = []
        url = f"ws://127.0.0.1:{served.port}/crm/ws/{name}"
        async with connect(url, additional_headers={"X-Api-Key": served.key()}, proxy=None) as ws:
            for message in send:
                await ws.send(message)
            try:
                with anyio.fail_after(DEADLINE):
                    while True:
                        messages.append(await ws.recv())
            except ConnectionClosed as ended:
                close = None if ended.rcvd is None else (ended.rcvd.code, ended.rcvd.reason)
        return Received(messages, close)

    return asyncio.run(agent())


def messages(*payloads: bytes, opcode: int = 1) -> list[bytes]:
    return [frame(opcode, payload) for payload in payloads]


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_the_oracle_reads_upstream_close_reasons_and_not_the_gateways_own() -> None:
    key = CRM_KEY[:11] + "s" + CRM_KEY[12:]  # its 12th character starts "secret_echo_blocked"
    blocked = Received([CRM_KEY[:11]], (1008, Reason.SECRET_ECHO_BLOCKED.value))
    assert not reveals(blocked.text(), key)
    forwarded = Received([CRM_KEY[:11]], (4000, key[11:30]))
    assert reveals(forwarded.text(), key)


# Findings: a credential cut across messages (fixed in _websocket_pump.py)

SECRET = CRM_KEY.encode()


@pytest.mark.parametrize("size", [1, 5, 11])
def test_a_credential_cut_across_text_messages_is_caught(served: Served, size: int) -> None:
    received = play(served, Script([*messages(*pieces(SECRET, size)), close_frame(1000)]))
    assert received.close == (1008, "secret_echo_blocked")
    assert not reveals(received.text(), CRM_KEY)


def test_base64_of_the_credential_cut_across_binary_messages_is_caught(served: Served) -> None:
    encoded = base64.b64encode(b"user:" + SECRET)
    received = play(served, Script([*messages(*pieces(encoded, 10), opcode=2), close_frame(1000)]))
    assert received.close == (1008, "secret_echo_blocked")
    assert not reveals(received.text(), CRM_KEY)


def test_the_rest_of_the_credential_in_the_close_reason_is_caught(served: Served) -> None:
    received = play(served, Script([frame(1, SECRET[:11]), close_frame(4000, SECRET[11:30])]))
    assert received.close == (1008, "secret_echo_blocked")
    assert not reveals(received.text(), CRM_KEY)


_FORMS: dict[str, Callable[[bytes], bytes]] = {
    "raw": lambda s: s,
    "base64": lambda s: base64.b64encode(b"k:" + s),
    "base64url": lambda s: base64.urlsafe_b64encode(b"x" + s).rstrip(b"="),
    "hex": lambda s: s.hex().encode(),
    "HEX": lambda s: s.hex().upper().encode(),
    "percent": lambda s: quote(s, safe="").encode(),
    "json": lambda s: "".join(f"\\u{c:04x}" for c in s).encode(),
    "wrapped": lambda s: b"\r\n  ".join(pieces(base64.b64encode(s), 9)),
    "json-string": lambda s: json.dumps({"k": s.decode()}).encode(),
}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    """A form of the credential inside other text, cut into messages and frames."""
    form = draw(st.sampled_from(sorted(_FORMS)))
    filler = st.text(alphabet="abc {}:,.\n", max_size=20)
    payload = draw(filler).encode() + _FORMS[form](SECRET) + draw(filler).encode()
    cuts = sorted(draw(st.sets(st.integers(1, len(payload) - 1), max_size=12)))
    frames: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
        message = payload[start:end]
        opcode = draw(st.sampled_from([1, 2]))
        splits = sorted(draw(st.sets(st.integers(1, max(1, len(message) - 1)), max_size=3)))
        parts = [message[a:b] for a, b in zip([0, *splits], [*splits, len(message)], strict=True)]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            frames.append(frame(opcode if index == 0 else 0, part, fin=last))
            if not last and draw(st.booleans()):
                frames.append(frame(9, b"ping"))  # control frames may interleave fragments
    return form, frames


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario=scenarios())
def test_generated_cuts_of_every_form_never_reach_the_agent(
    served: Served, scenario: tuple[str, list[bytes]]
) -> None:
    _, frames = scenario
    received = play(served, Script([*frames, close_frame(1000, b"bye")]))
    assert not reveals(received.text(), CRM_KEY)
    assert received.close == (1008, "secret_echo_blocked")


@pytest.mark.parametrize("index", [0, 1], ids=["the-key-presented", "another-key-of-ours"])
def test_an_agent_key_cut_across_agent_messages_never_reaches_the_vendor(
    served: Served, index: int
) -> None:
    """The other direction: a gateway key, one short piece per agent message. Of the key the
    socket was opened with, its first and last twelve characters count (as in a body); of
    any other key, its whole shape."""
    key = served.key(index)
    name = f"s{next(_counter)}"
    served.vendor.scripts[name] = Script([])

    async def agent() -> tuple[int, str] | None:
        url = f"ws://127.0.0.1:{served.port}/crm/ws/{name}"
        async with connect(url, additional_headers={"X-Api-Key": served.key()}, proxy=None) as ws:
            try:
                for piece in pieces(key.encode(), 11):
                    await ws.send(piece.decode())
                with anyio.move_on_after(1.0):  # a close comes at once, if at all
                    await ws.recv()
            except ConnectionClosed as ended:
                return None if ended.rcvd is None else (ended.rcvd.code, ended.rcvd.reason)
        return None

    close = asyncio.run(agent())
    sent = bytes(served.vendor.received.get(name, b"")).decode()
    assert key not in sent
    if index == 0:
        assert key[:12] not in sent
    assert close == (1008, "key_outside_credential_position")


# What held (regression guards)


def test_compressed_frames_without_negotiation_are_a_protocol_error(served: Served) -> None:
    squeeze = zlib.compressobj(wbits=-15)
    packed = (squeeze.compress(b"key " + SECRET) + squeeze.flush(zlib.Z_SYNC_FLUSH))[:-4]
    script = Script(
        [frame(1, packed, rsv1=True), close_frame(1000)],
        headers=[("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    received = play(served, script)
    assert received.close == (1011, "upstream protocol error")
    assert received.messages == []


def test_handshake_headers_and_an_unoffered_subprotocol_never_reach_the_agent(
    served: Served,
) -> None:
    key = CRM_KEY
    headers = [("Sec-WebSocket-Protocol", key), ("X-Debug", key), ("Set-Cookie", f"k={key}")]
    name = f"s{next(_counter)}"
    served.vendor.scripts[name] = Script([frame(1, b"hi"), close_frame(1000)], headers=headers)

    async def agent() -> tuple[str | None, str]:
        url = f"ws://127.0.0.1:{served.port}/crm/ws/{name}"
        async with connect(url, additional_headers={"X-Api-Key": served.key()}, proxy=None) as ws:
            assert ws.response is not None
            shown = "\n".join(f"{k}: {v}" for k, v in ws.response.headers.raw_items())
            return ws.subprotocol, shown

    protocol, shown = asyncio.run(agent())
    assert protocol is None
    assert not reveals(shown, CRM_KEY)


def test_the_credential_in_pings_and_pongs_stays_between_gateway_and_vendor(
    served: Served,
) -> None:
    received = play(served, Script([frame(9, SECRET), frame(10, SECRET), close_frame(1000)]))
    assert received.close == (1000, "")
    assert received.messages == []


def test_invalid_utf8_in_a_text_message_is_a_protocol_error(served: Served) -> None:
    received = play(served, Script([frame(1, b"\xff" + SECRET), close_frame(1000)]))
    assert received.close == (1011, "upstream protocol error")
