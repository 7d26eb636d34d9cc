"""Attack: a read-only key reaches a gateway MCP service's tools around the tool gate.

An ``mcp = true`` service is reached with ``read`` for every method (each tool call then needs
its own level), and its route fixes that level, so a websocket handshake to it needs ``read``
too. The gate reads HTTP bodies only: a websocket to the same service used to be relayed to the
upstream, where a server that speaks JSON-RPC over websockets ran ``purge`` for a reader. Real
sockets: a websockets client, the gateway and a Starlette upstream under uvicorn.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from agentguard import CredentialOwner, CredentialScope
from agentguard.config import SecretValues, Settings
from agentguard.credentials import CredentialVault
from agentguard.gateway import build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.support.servers import LoopbackServer, free_port

pytest.importorskip("aiohttp")
pytest.importorskip("websockets")

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.anyio

DEADLINE = 5.0
PURGE = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "purge"}}


@dataclass
class Upstream:
    """An MCP-ish server that runs every ``tools/call`` it gets over a websocket."""

    ran: list[str] = field(default_factory=list)
    handshakes: int = 0

    async def endpoint(self, socket: WebSocket) -> None:
        self.handshakes += 1
        await socket.accept()
        try:
            while True:
                message = json.loads(await socket.receive_text())
                if message.get("method") == "tools/call":
                    self.ran.append(message["params"]["name"])
                await socket.send_text(json.dumps({"jsonrpc": "2.0", "id": message.get("id"),
                                                   "result": {"content": []}}))  # fmt: skip
        except WebSocketDisconnect:
            return


@dataclass
class World:
    origin: str
    keys: dict[str, str]
    upstream: Upstream
    store: MemoryStore


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    upstream = Upstream()
    app = Starlette(routes=[WebSocketRoute("/{rest:path}", upstream.endpoint)])
    with LoopbackServer(app) as upstream_server:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        settings = Settings.model_validate(
            {
                "public_origin": origin,
                "store": {"url": "memory://"},
                "services": [
                    {
                        "name": "notes",
                        "base_url": upstream_server.url,
                        "allow_insecure_http": True,
                        "mcp": True,
                        "tools": {"purge": "write"},
                        "max_request_bytes": 65536,
                    }
                ],
            }
        )
        kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
        settings = settings.model_copy(update={"secret_values": SecretValues(kek=SecretStr(kek))})
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        gateway = build_gateway(settings, store=store, clock=clock)

        async def seed() -> dict[str, str]:
            vault = CredentialVault(store, gateway.settings.keyring())
            keys = {}
            for user, grants in (("reader", "notes:read"), ("writer", "notes:write")):
                made = await make_user(store, user_id=user, grants=grants)
                await vault.put(
                    "notes", CredentialOwner.USER, user, CANARY, scope=CredentialScope.USER
                )
                keys[user] = (await gateway.guard.issuer.issue(made.id, "ws-1")).access_key.reveal()
            return keys

        keys = anyio.run(seed)
        with LoopbackServer(gateway.app, lifespan="on", port=port):
            yield World(origin, keys, upstream, store)


async def _purge_over_websocket(world: World, key: str) -> int | None:
    """Open a websocket to the MCP service and send ``tools/call purge``; the refusal status."""
    url = world.origin.replace("http://", "ws://") + "/notes/mcp"
    try:
        with anyio.fail_after(DEADLINE):
            async with connect(url, additional_headers={"authorization": f"Bearer {key}"}) as ws:
                await ws.send(json.dumps(PURGE))
                await ws.recv()
    except InvalidStatus as refused:
        return refused.response.status_code
    except ConnectionClosed:
        return None
    return None


@pytest.mark.parametrize("user", ["reader", "writer"])
async def test_a_websocket_never_reaches_an_mcp_services_upstream(
    world: World, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="websockets")  # its debug log prints the headers
    status = await _purge_over_websocket(world, world.keys[user])
    assert status == 400  # the handshake is refused: tool calls are only checked over HTTP
    assert world.upstream.ran == []
    assert world.upstream.handshakes == 0
    events = [entry.event() for entry in await world.store.read()]
    assert events[-1]["decision"] == "deny"
    assert (events[-1]["status"], events[-1]["reason"]) == (400, "malformed_request")
