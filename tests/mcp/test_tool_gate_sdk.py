"""The tool gate in front of an SDK MCP server (AgentGuardMCP), driven by the SDK's own client
over real sockets: listings cut to what the caller may call, refusals before the tool runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import anyio
import httpx
import pytest

from agentguard import Grants, Guard
from agentguard.asgi import ProtectedResourceMetadata
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.integrations.mcp import AgentGuardMCP
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.mcp.tool_servers import (
    ALL_TOOLS,
    HEADERS,
    call_body,
    listed,
    notes_server,
    refused_call,
    session,
)
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

#: user -> grants; ``narrowed`` is the writer's key scoped to deny add_note.
USERS = {
    "reader": "notes:read",
    "writer": "notes:write",
    "adder": "notes:read notes/add_note:write",
    "no-purge": "notes:write notes/purge:none",
}


@dataclass
class World:
    url: str
    store: MemoryStore
    keys: dict[str, str]
    ran: list[str]
    json_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def mcp(self) -> str:
        return self.url + "/mcp"

    async def events(self) -> list[dict[str, object]]:
        return [entry.event() for entry in await self.store.read()]

    async def tool_events(self) -> list[dict[str, object]]:
        return [event for event in await self.events() if event["method"] == "tools/call"]


def _late(apps: list[ASGIApp]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[0](scope, receive, send)

    return app


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)

    async def setup() -> dict[str, str]:
        keys = {}
        for user, grants in USERS.items():
            made = await make_user(store, user_id=user, grants=grants)
            keys[user] = (await guard.issuer.issue(made.id, "ws-1")).access_key.reveal()
        narrowed = Grants.from_scope("notes:write notes/add_note:none")
        issued = await guard.issuer.issue("writer", "ws-1", scope=narrowed)
        keys["narrowed"] = issued.access_key.reveal()
        return keys

    keys = anyio.run(setup)
    ran: list[str] = []
    apps: list[ASGIApp] = []
    json_apps: list[ASGIApp] = []
    server = LoopbackServer(_late(apps), lifespan="on")
    json_server = LoopbackServer(_late(json_apps), lifespan="on")
    metadata = ProtectedResourceMetadata.from_guard(
        guard, resource=f"{server.url}/mcp", authorization_servers=[server.url]
    )
    apps.append(
        AgentGuardMCP(
            notes_server(ran).streamable_http_app(), guard, metadata=metadata, service="notes"
        )
    )
    json_apps.append(
        AgentGuardMCP(
            notes_server(ran).streamable_http_app(json_response=True), guard, service="notes"
        )
    )
    with server, json_server:
        yield World(server.url, store, keys, ran, json_url=json_server.url)


async def test_each_caller_lists_only_the_tools_it_may_call(world: World) -> None:
    assert await listed(world.mcp, world.keys["reader"]) == ["count_notes", "list_notes"]
    assert await listed(world.mcp, world.keys["writer"]) == ALL_TOOLS
    assert await listed(world.mcp, world.keys["adder"]) == ["add_note", "count_notes", "list_notes"]
    assert await listed(world.mcp, world.keys["no-purge"]) == [
        "add_note",
        "count_notes",
        "list_notes",
    ]
    assert await listed(world.mcp, world.keys["narrowed"]) == ["count_notes", "list_notes", "purge"]


async def test_a_json_response_server_is_filtered_too(world: World) -> None:
    url = world.json_url + "/mcp"
    assert await listed(url, world.keys["reader"]) == ["count_notes", "list_notes"]


async def test_a_readers_write_call_is_403_step_up_and_never_runs(world: World) -> None:
    before = list(world.ran)
    seen = await refused_call(world.mcp, world.keys["reader"], "add_note", {"text": "x"})
    assert 403 in seen.statuses
    challenge = seen.challenge(403)
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="notes/add_note:write"' in challenge
    assert f'resource_metadata="{world.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert world.ran == before  # the tool function never ran
    async with httpx.AsyncClient() as http:
        raw = await http.post(
            world.mcp,
            content=call_body(("add_note", {"text": "x"})),
            headers={**HEADERS, "authorization": f"Bearer {world.keys['reader']}"},
        )
    assert raw.status_code == 403
    body = raw.json()
    assert (body["error"], body["reason"], body["scope"]) == (
        "insufficient_scope",
        "insufficient_scope",
        "notes/add_note:write",
    )
    assert world.ran == before


async def test_a_tool_grant_lifts_one_tool_above_its_service(world: World) -> None:
    async with session(world.mcp, world.keys["adder"]) as client:
        result = await client.call_tool("add_note", {"text": "lifted"})
        counted = await client.call_tool("count_notes", {})
    assert not result.is_error and not counted.is_error
    assert world.ran[-2:] == ["add_note", "count_notes"]
    seen = await refused_call(world.mcp, world.keys["adder"], "purge", {})
    assert 'scope="notes/purge:write"' in seen.challenge(403)
    assert "purge" not in world.ran


async def test_a_key_narrowed_to_deny_a_tool_cannot_call_it(world: World) -> None:
    before = list(world.ran)
    seen = await refused_call(world.mcp, world.keys["narrowed"], "add_note", {"text": "x"})
    assert 'scope="notes/add_note:write"' in seen.challenge(403)
    async with session(world.mcp, world.keys["narrowed"]) as client:
        assert not (await client.call_tool("list_notes", {})).is_error
    assert world.ran == [*before, "list_notes"]


async def test_a_none_tool_grant_denies_it_under_a_write_service(world: World) -> None:
    seen = await refused_call(world.mcp, world.keys["no-purge"], "purge", {})
    assert 'scope="notes/purge:write"' in seen.challenge(403)
    assert "purge" not in world.ran


async def test_a_batch_with_one_refused_call_is_refused_whole(world: World) -> None:
    before = list(world.ran)
    async with httpx.AsyncClient() as http:
        raw = await http.post(
            world.mcp,
            content=call_body(("list_notes", {}), ("add_note", {"text": "x"}), ("purge", {})),
            headers={**HEADERS, "authorization": f"Bearer {world.keys['reader']}"},
        )
    assert raw.status_code == 403
    assert 'scope="notes/add_note:write notes/purge:write"' in raw.headers["www-authenticate"]
    assert raw.json()["scope"] == "notes/add_note:write notes/purge:write"
    assert world.ran == before
    events = (await world.tool_events())[-3:]
    assert [(e["detail"], e["decision"]) for e in events] == [
        ({"tool": "list_notes", "with_batch": True}, "deny"),
        ({"tool": "add_note"}, "deny"),
        ({"tool": "purge"}, "deny"),
    ]


async def test_an_allowed_call_is_audited_once_with_its_tool(world: World) -> None:
    count = len(await world.tool_events())
    async with session(world.mcp, world.keys["writer"]) as client:
        assert not (await client.call_tool("add_note", {"text": "audited"})).is_error
    events = (await world.tool_events())[count:]
    assert [(e["decision"], e["service"], e["detail"]) for e in events] == [
        ("allow", "notes", {"tool": "add_note"})
    ]
    assert events[0]["actor"]["user"] == "writer"  # type: ignore[index]
    assert events[0]["path"] == "tool:add_note"


async def test_an_oversized_body_is_413_declared_or_streamed(world: World) -> None:
    big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * (1 << 20) + b'"}}'
    auth = {**HEADERS, "authorization": f"Bearer {world.keys['writer']}"}

    async def chunks() -> object:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    async with httpx.AsyncClient() as http:
        declared = await http.post(world.mcp, content=big, headers=auth)
        streamed = await http.post(world.mcp, content=chunks(), headers=auth)  # type: ignore[arg-type]
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == "invalid_request"
        assert "1048576 bytes" in response.json()["error_description"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_notes","name":"purge"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"purge"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"purge"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_notes"},'
        b'"param\xc5\xbf":{"name":"purge"}}',
        b"\xef\xbb\xbf{}",
        b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
        b"",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}',
        b'[[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"purge"}}]]',
    ],
)
async def test_bodies_two_parsers_could_read_differently_are_400(world: World, body: bytes) -> None:
    before = list(world.ran)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            world.mcp,
            content=body,
            headers={**HEADERS, "authorization": f"Bearer {world.keys['writer']}"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert world.ran == before


async def test_a_routing_header_that_disagrees_with_the_body_is_400(world: World) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            world.mcp,
            content=call_body(("list_notes", {})),
            headers={
                **HEADERS,
                "authorization": f"Bearer {world.keys['reader']}",
                "mcp-method": "tools/call",
                "mcp-name": "purge",
            },
        )
    assert response.status_code == 400
    assert "Mcp-Name" in response.json()["error_description"]


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server/mcp",
        "/mcp/.well-known/openid-configuration",
    ],
)
async def test_well_known_paths_but_ours_are_404(world: World, path: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(world.url + path)
        ours = await http.get(world.url + "/.well-known/oauth-protected-resource/mcp")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "www-authenticate" not in response.headers
    assert ours.status_code == 200
    assert json.loads(ours.text)["resource"] == world.url + "/mcp"


async def test_a_tool_nobody_configured_is_refused_without_a_service() -> None:
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)

    async def setup() -> str:
        user = await make_user(store, user_id="writer", grants="notes:write")
        return (await guard.issuer.issue(user.id, "ws-1")).access_key.reveal()

    key = await setup()
    ran: list[str] = []
    app = AgentGuardMCP(notes_server(ran).streamable_http_app(), guard)  # no service=
    with LoopbackServer(app, lifespan="on") as server:
        assert await listed(server.url + "/mcp", key) == ["add_note", "list_notes"]
        async with httpx.AsyncClient() as http:
            response = await http.post(
                server.url + "/mcp",
                content=call_body(("purge", {})),
                headers={**HEADERS, "authorization": f"Bearer {key}"},
            )
    assert response.status_code == 403
    assert "no permission is configured for tool 'purge'" in response.json()["error_description"]
    assert ran == []


async def test_require_tool_still_refuses_what_a_looser_mapping_let_through() -> None:
    """Defence in depth: a mapping that says read for add_note passes the gate, and the tool's
    own require_tool("notes", "write") refuses it as a tool error, audited."""
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    user = await make_user(store, user_id="reader", grants="notes:read")
    key = (await guard.issuer.issue(user.id, "ws-1")).access_key.reveal()
    ran: list[str] = []
    app = AgentGuardMCP(
        notes_server(ran).streamable_http_app(), guard, service="notes", tools={"add_note": "read"}
    )
    with LoopbackServer(app, lifespan="on") as server:
        async with session(server.url + "/mcp", key) as client:
            result = await client.call_tool("add_note", {"text": "x"})
    assert result.is_error
    assert "notes/add_note:write" in result.content[0].text  # type: ignore[union-attr]
    assert ran == []
    events = [entry.event() for entry in await store.read()]
    decided = [(e["decision"], e["detail"]) for e in events if e["method"] == "tools/call"]
    assert decided == [("allow", {"tool": "add_note"}), ("deny", {"tool": "add_note"})]
