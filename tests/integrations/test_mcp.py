"""The MCP example, exercised by the ``mcp`` SDK's own client over streamable HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import anyio
import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agentguard import Guard, IssuedKeys
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from examples import mcp_server
from tests.mcp.tool_servers import refused_call
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio


@dataclass
class Served:
    url: str
    store: MemoryStore
    guard: Guard
    reader: IssuedKeys
    writer: IssuedKeys
    clock: FakeClock


@pytest.fixture
def served() -> Iterator[Served]:
    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)

    async def setup() -> tuple[IssuedKeys, IssuedKeys]:
        reader = await make_user(store, user_id="reader", grants="notes:read")
        writer = await make_user(store, user_id="writer", grants="notes:write")
        return (
            await guard.issuer.issue(reader.id, "ws-1"),
            await guard.issuer.issue(writer.id, "ws-1"),
        )

    reader_keys, writer_keys = anyio.run(setup)
    apps: list[ASGIApp] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[0](scope, receive, send)

    server = LoopbackServer(app, lifespan="on")
    # The resource identifier names the port, which is only known once the server has one.
    apps.append(mcp_server.create_app(guard, f"{server.url}/mcp"))
    with server:
        yield Served(server.url, store, guard, reader_keys, writer_keys, clock)


def leaf_errors(error: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups, or ``error`` itself."""
    nested = getattr(error, "exceptions", None)
    if nested is None:
        return [error]
    return [leaf for inner in nested for leaf in leaf_errors(inner)]


@asynccontextmanager
async def session(
    url: str, key: str | None, statuses: list[int] | None = None
) -> AsyncIterator[ClientSession]:
    """An initialised SDK session; ``statuses`` collects the status of every HTTP response."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(headers=headers, timeout=10, event_hooks={"response": [record]}) as http,
        streamable_http_client(url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


async def test_listing_tools_without_a_key_is_401_with_resource_metadata(served: Served) -> None:
    statuses: list[int] = []
    refused: Exception | None = None
    try:
        async with session(served.url, None, statuses) as client:
            await client.list_tools()
    except Exception as error:  # the SDK raises MCPError inside its task groups
        refused = error
    assert refused is not None, "the SDK listed tools without a key"
    assert [type(error) for error in leaf_errors(refused)] == [MCPError]
    assert statuses == [401]  # the very first request was refused, and nothing got through
    async with httpx.AsyncClient() as http:
        response = await http.post(served.url + "/mcp", json={})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    metadata_url = served.url + "/.well-known/oauth-protected-resource/mcp"
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{metadata_url}"' in challenge
    assert response.json()["reason"] == "missing_credentials"
    async with httpx.AsyncClient() as http:
        document = (await http.get(metadata_url)).json()
    assert document["resource"] == served.url + "/mcp"
    assert document["scopes_supported"] == ["notes:read", "notes:write"]


async def test_tools_are_listed_with_a_key(served: Served) -> None:
    async with session(served.url, served.reader.access_key.reveal()) as client:
        tools = await client.list_tools()
    assert sorted(tool.name for tool in tools.tools) == ["list_notes"]  # the reader's only tool
    async with session(served.url, served.writer.access_key.reveal()) as client:
        tools = await client.list_tools()
    assert sorted(tool.name for tool in tools.tools) == ["add_note", "list_notes"]


async def test_key_without_the_tools_permission_is_refused_and_audited(served: Served) -> None:
    seen = await refused_call(
        served.url + "/mcp", served.reader.access_key.reveal(), "add_note", {"text": "hi"}
    )
    assert 'scope="notes/add_note:write"' in seen.challenge(403)  # step-up, before the tool ran
    events = [entry.event() for entry in await served.store.read()]
    denied = [e for e in events if e["method"] == "tools/call"]
    assert denied[-1]["decision"] == "deny"
    assert denied[-1]["service"] == "notes"
    assert denied[-1]["detail"] == {"tool": "add_note"}


async def test_right_key_calls_the_tool_and_is_audited(served: Served) -> None:
    async with session(served.url, served.writer.access_key.reveal()) as client:
        result = await client.call_tool("add_note", {"text": "remember"})
    assert not result.is_error
    assert json.dumps(result.structured_content or {}).find("added note") >= 0 or "added" in (
        result.content[0].text  # type: ignore[union-attr]
    )
    events = [entry.event() for entry in await served.store.read()]
    calls = [e for e in events if e["method"] == "tools/call"]
    assert calls[-1]["decision"] == "allow"
    assert calls[-1]["actor"]["user"] == "writer"  # type: ignore[index]
    assert mcp_server.NOTES["writer"][-1] == "remember"


def test_dpop_bound_key_works_through_the_sdk_and_challenges_name_dpop() -> None:
    from agentguard.dpop import DPoPKey, DPoPPolicy

    clock = FakeClock(datetime.now(timezone.utc))
    store = MemoryStore(clock=clock)
    apps: list[ASGIApp] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[0](scope, receive, send)

    server = LoopbackServer(app, lifespan="on")
    guard = Guard(store, clock=clock, dpop=DPoPPolicy(public_origin=server.url, required=True))
    apps.append(mcp_server.create_app(guard, f"{server.url}/mcp"))
    dpop_key = DPoPKey.generate()

    async def issue() -> IssuedKeys:
        user = await make_user(store, user_id="writer", grants="notes:write")
        return await guard.issuer.issue(user.id, "ws-1", jkt=dpop_key.thumbprint)

    keys = anyio.run(issue)
    key = keys.access_key.reveal()

    async def sign(request: httpx2.Request) -> None:
        request.headers["Authorization"] = f"DPoP {key}"
        request.headers["DPoP"] = dpop_key.proof(request.method, str(request.url), access_key=key)

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            bearer = await http.post(
                server.url + "/mcp", json={}, headers={"Authorization": f"Bearer {key}"}
            )
        assert bearer.status_code == 401
        challenges = bearer.headers.get_list("www-authenticate")
        assert challenges[0].startswith("DPoP ")
        assert "resource_metadata=" in challenges[0]
        async with (
            httpx2.AsyncClient(event_hooks={"request": [sign]}, timeout=10) as http2,
            streamable_http_client(server.url + "/mcp", http_client=http2) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            result = await client.call_tool("add_note", {"text": "bound"})
        assert not result.is_error

    with server:
        anyio.run(scenario)
    assert mcp_server.NOTES["writer"][-1] == "bound"
