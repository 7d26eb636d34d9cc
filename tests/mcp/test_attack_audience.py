"""Attack: key audiences (RFC 8707) widened by spelling, by refresh, or by a server that does
not know its own identifier.

Generated resources mix case, default ports, userinfo, dot segments (plain and
percent-encoded), encoded slashes, backslashes, empty segments and trailing slashes: a refresh may
narrow an audience to any of them only if every resource the narrowed audience covers was
covered before, and a key for one resource is refused by a server that names another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import Guard
from agentguard._audience import InvalidTarget, canonical_resource, covers, narrow_audience
from agentguard.integrations.mcp import AgentGuardMCP
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.mcp.dpop_servers import BODY as INITIALIZE
from tests.mcp.tool_servers import HEADERS, notes_server
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

MCP = "https://api.example.com/mcp"
SEGMENTS = ["mcp", "MCP", "admin", "..", ".", "%2e%2e", "%2E", "%2f", "%5c..", "a%2F..", "", "~x"]
ORIGINS = [
    "https://api.example.com",
    "HTTPS://API.EXAMPLE.COM:443",
    "https://api.example.com:8443",
    "http://api.example.com",
    "https://api.example.com.",
    "https://user@api.example.com",
    "https://xn--pi-7ka.example.com",
    "https://[::1]",
]
resources = st.builds(
    lambda origin, segments, slash: origin + "/" + "/".join(segments) + slash,
    st.sampled_from(ORIGINS),
    st.lists(st.sampled_from(SEGMENTS), max_size=4),
    st.sampled_from(["", "/", "//"]),
)


@settings(max_examples=400, deadline=None)
@given(audience=resources, requested=resources, target=resources)
def test_a_refresh_never_widens_an_audience(audience: str, requested: str, target: str) -> None:
    try:
        canonical_resource(audience)
        canonical_resource(target)
    except ValueError:
        return
    try:
        narrowed = narrow_audience(audience, requested)
    except InvalidTarget:
        return
    assert narrowed is not None
    assert canonical_resource(narrowed) == narrowed  # stored canonical: read back the same
    if covers(narrowed, target):
        assert covers(audience, target), (audience, requested, narrowed, target)


@pytest.mark.parametrize(
    "requested",
    [
        MCP + "/../admin",
        MCP + "/%2e%2e/admin",
        MCP + "/%2E%2E",
        "https://api.example.com/mcp%2f..%2fadmin/..",
        "https://api.example.com:443/mcpx",
        "https://API.example.com./mcp",
        "https://user@api.example.com/mcp",
        "http://api.example.com/mcp",
    ],
)
def test_spelling_tricks_never_switch_an_audience(requested: str) -> None:
    try:
        narrowed = narrow_audience(MCP, requested)
    except InvalidTarget:
        return
    assert narrowed is not None
    assert not covers(narrowed, "https://api.example.com/admin")
    assert covers(MCP, narrowed)


@dataclass
class World:
    url: str
    keys: dict[str, str]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    ran: list[str] = []
    app = AgentGuardMCP(notes_server(ran).streamable_http_app(), guard, service="notes")

    async def seed() -> dict[str, str]:
        made = await make_user(store, user_id="writer", grants="notes:write")
        elsewhere = await guard.issuer.issue(made.id, "ws-1", audience="https://other.example/mcp")
        return {"elsewhere": elsewhere.access_key.reveal()}

    keys = anyio.run(seed)
    with LoopbackServer(app, lifespan="on") as server:
        yield World(server.url + "/mcp", keys)


async def test_a_server_without_a_resource_refuses_a_key_issued_for_another(world: World) -> None:
    # A malicious MCP server replays the key a client sent it (RFC 8707's threat): a server that
    # does not know its own identifier cannot tell the key is not for it, so it must refuse it.
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            world.url,
            content=INITIALIZE,
            headers={**HEADERS, "authorization": f"Bearer {world.keys['elsewhere']}"},
        )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
