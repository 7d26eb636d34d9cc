"""Attack: a reader reads an unfiltered ``tools/list`` result on a request that asked for none.

The SDK's handshake-era transport routes each response to the open ``POST`` stream registered
under ``str(response.id)``, and a later ``POST`` with the same id takes the stream over. So a
reader sends ``tools/list`` with id ``7`` (its response would be filtered), then, while the
listing is being computed, a ``tools/call`` of a tool it may call with id ``"7"``: the listing
is routed onto the second request's response, which the gate used to pass through unfiltered
because that request asked for no listing. Driven over real sockets against AgentGuardMCP and
against the gateway proxying the same server; the server's listing and the reader's tool wait
on latches, so the interleaving is forced, not raced.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import MCPServer
from mcp_types import Tool, jsonrpc_message_adapter
from pydantic import SecretStr, ValidationError

from agentguard import CredentialOwner, CredentialScope, Guard
from agentguard._mcp_gate._listing import ListingFilter
from agentguard.asgi._types import Message
from agentguard.config import SecretValues, Settings
from agentguard.credentials import CredentialVault
from agentguard.gateway import build_gateway
from agentguard.integrations.mcp import AgentGuardMCP, require_tool
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.support.servers import LoopbackServer, free_port

pytestmark = [
    pytest.mark.anyio,
    # the SDK never closes the stream a colliding request took over (its own leak, not ours)
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

DEADLINE = 5.0
VERSION = "2025-06-18"


@dataclass
class Latches:
    """The server's listing and its slow read tool each wait until the test lets them go."""

    listing: threading.Event = field(default_factory=threading.Event)
    release_listing: threading.Event = field(default_factory=threading.Event)
    reading: threading.Event = field(default_factory=threading.Event)
    release_reading: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        for latch in (self.listing, self.release_listing, self.reading, self.release_reading):
            latch.clear()


def slow_server(latches: Latches, *, guarded: bool) -> MCPServer:
    """``slow_read`` (read) and ``secret_purge`` (write, never to be shown to a reader)."""

    class SlowListing(MCPServer):
        async def list_tools(self) -> list[Tool]:
            latches.listing.set()
            await anyio.to_thread.run_sync(latches.release_listing.wait, DEADLINE)
            return await super().list_tools()

    server = SlowListing("notes")

    async def slow_read() -> str:
        """Reads slowly."""
        latches.reading.set()
        await anyio.to_thread.run_sync(latches.release_reading.wait, DEADLINE)
        return "read"

    async def secret_purge() -> str:
        """Deletes everything."""
        return "purged"

    server.tool()(require_tool("notes", "read")(slow_read) if guarded else slow_read)
    server.tool()(secret_purge)
    return server


async def _wait(latch: threading.Event) -> None:
    assert await anyio.to_thread.run_sync(latch.wait, DEADLINE), "the server never got there"


async def collide(url: str, key: str, latches: Latches) -> str:
    """Run the id collision as a reader; the body of the ``tools/call`` response."""
    latches.reset()
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "authorization": f"Bearer {key}",
    }
    initialize = {"protocolVersion": VERSION, "capabilities": {},
                  "clientInfo": {"name": "attacker", "version": "1"}}  # fmt: skip
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        opened = await http.post(
            url,
            headers=headers,
            json={
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": initialize,
            },
        )
        assert opened.status_code == 200, opened.text
        headers |= {"mcp-session-id": opened.headers["mcp-session-id"],
                    "mcp-protocol-version": VERSION}  # fmt: skip
        ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(url, headers=headers, json=ready)).status_code == 202
        answers: dict[str, httpx.Response] = {}
        answered = anyio.Event()

        async def post(label: str, body: dict[str, Any]) -> None:
            answers[label] = await http.post(url, headers=headers, json=body)
            if label == "call":
                answered.set()

        async with anyio.create_task_group() as group:
            group.start_soon(post, "list", {"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
            await _wait(latches.listing)
            call = {"name": "slow_read", "arguments": {}}
            group.start_soon(
                post, "call", {"jsonrpc": "2.0", "id": "7", "method": "tools/call", "params": call}
            )
            await _wait(latches.reading)  # the call's stream is registered under "7" now
            latches.release_listing.set()
            with anyio.fail_after(DEADLINE):
                await answered.wait()
            latches.release_reading.set()
            group.cancel_scope.cancel()  # the listing's own request never gets its answer
        await http.delete(url, headers=headers)  # end the session and its abandoned stream
    return answers["call"].text


@dataclass
class World:
    url: str
    gateway_url: str
    keys: dict[str, str]
    latches: Latches


def _gateway_settings(origin: str, upstream: str) -> Settings:
    built = Settings.model_validate(
        {
            "public_origin": origin,
            "store": {"url": "memory://"},
            "services": [
                {
                    "name": "notes",
                    "base_url": upstream,
                    "allow_insecure_http": True,
                    "mcp": True,
                    "tools": {"slow_read": "read"},
                    "max_request_bytes": 65536,
                }
            ],
        }
    )
    kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    return built.model_copy(update={"secret_values": SecretValues(kek=SecretStr(kek))})


def _quick(server: LoopbackServer) -> LoopbackServer:
    """Shut down without waiting for the request the SDK leaves hanging (its stream was taken)."""
    server.server.config.timeout_graceful_shutdown = 1
    return server


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    latches = Latches()
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    app = AgentGuardMCP(
        slow_server(latches, guarded=True).streamable_http_app(), guard, service="notes"
    )
    upstream = slow_server(latches, guarded=False).streamable_http_app()
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    with (
        _quick(LoopbackServer(app, lifespan="on")) as server,
        _quick(LoopbackServer(upstream, lifespan="on")) as upstream_server,
    ):
        gateway = build_gateway(
            _gateway_settings(origin, upstream_server.url), store=MemoryStore(clock=clock),
            clock=clock,
        )  # fmt: skip

        async def seed() -> dict[str, str]:
            made = await make_user(store, user_id="reader", grants="notes:read")
            keys = {"sdk": (await guard.issuer.issue(made.id, "ws-1")).access_key.reveal()}
            gateway_store = gateway.store
            made = await make_user(gateway_store, user_id="reader", grants="notes:read")
            vault = CredentialVault(gateway_store, gateway.settings.keyring())
            await vault.put("notes", CredentialOwner.USER, "reader", CANARY,
                            scope=CredentialScope.USER)  # fmt: skip
            issued = await gateway.guard.issuer.issue(made.id, "ws-1")
            keys["gateway"] = issued.access_key.reveal()
            return keys

        keys = anyio.run(seed)
        with _quick(LoopbackServer(gateway.app, lifespan="on", port=port)):
            yield World(server.url + "/mcp", origin + "/notes/mcp", keys, latches)


async def test_a_listing_routed_onto_a_call_is_filtered_by_agentguard_mcp(world: World) -> None:
    leaked = await collide(world.url, world.keys["sdk"], world.latches)
    assert '"slow_read"' in leaked  # the listing did arrive on the call's stream...
    assert "secret_purge" not in leaked  # ...cut to what the reader may call


async def test_a_listing_routed_onto_a_call_is_filtered_by_the_gateway(world: World) -> None:
    leaked = await collide(world.gateway_url, world.keys["gateway"], world.latches)
    assert '"slow_read"' in leaked
    assert "secret_purge" not in leaked


# The listing filter against the SDK client's own SSE reading (httpx2's EventSource, then the
# JSON-RPC adapter the client validates each event with): whatever event bytes a server sends,
# the client must never read a tool the filter would have cut.

HIDDEN = "secret_purge"


def _client_tools(stream: bytes) -> set[str]:
    """The tool names an SDK client reads from an event stream."""
    response = httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=stream,
        request=httpx2.Request("POST", "http://mcp.example/mcp"),
    )
    seen: set[str] = set()
    for event in httpx2.EventSource(response):
        try:
            message = jsonrpc_message_adapter.validate_json(event.data, by_name=False)
        except ValidationError:
            continue
        result = getattr(message, "result", None)
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            seen |= {str(tool.get("name")) for tool in result["tools"] if isinstance(tool, dict)}
    return seen


async def _filtered(stream: bytes, cuts: list[int]) -> bytes:
    out: list[bytes] = []

    async def send(message: Message) -> None:
        out.append(message.get("body", b""))

    gate = ListingFilter(
        {"type": "http", "method": "POST"},
        send,
        keep=lambda name, annotations: name != HIDDEN,
        learn=lambda name, annotations: None,
        cap=1 << 16,
        service="notes",
    )
    await gate({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        await gate({"type": "http.response.body", "body": piece, "more_body": not last})
    return b"".join(out)


ODD_TEXT = st.sampled_from(
    [b"plain", b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\\u00e9", b"\xc0\xaf"]
)


@settings(max_examples=150, deadline=None)
@given(
    description=ODD_TEXT,
    ending=st.sampled_from([b"\n\n", b"\r\n\r\n", b"\r\r", b"\n"]),
    split_data=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=4).map(sorted),
)
async def test_no_event_bytes_show_the_client_a_cut_tool(
    description: bytes, ending: bytes, split_data: bool, cuts: list[int]
) -> None:
    listing = (
        b'{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"slow_read","inputSchema":{}},'
        b'{"name":"' + HIDDEN.encode() + b'","description":"' + description + b'",'
        b'"inputSchema":{}}]}}'
    )
    data = listing.replace(b'"tools":', b'"tools":\ndata: ') if split_data else listing
    stream = b"event: message" + ending[: len(ending) // 2] + b"data: " + data + ending
    assert HIDDEN not in _client_tools(
        await _filtered(stream, [c for c in cuts if c < len(stream)])
    )


async def test_an_invalid_utf8_byte_in_a_listing_does_not_get_it_past_the_filter() -> None:
    listing = (
        b'event: message\ndata: {"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"'
        + HIDDEN.encode()
        + b'","description":"\xff","inputSchema":{}}]}}\n\n'
    )
    assert _client_tools(listing) == {HIDDEN}  # what the client reads unfiltered
    assert _client_tools(await _filtered(listing, [])) == set()
