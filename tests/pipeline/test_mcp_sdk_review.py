"""Guard-level reviewers reach the real MCP SDK app: tool arguments in, tool results out.

``examples/mcp_server.py`` passes no reviewers to :class:`AgentGuardMCP`; the guard's own
(``Guard(request_reviewers=..., response_reviewers=...)``) apply there, driven by the SDK's own
client over streamable HTTP on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from agentguard import Guard
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from examples import mcp_server
from tests.pipeline.deployments import BLOCK, REDACT, SCRUBBED, TokenScreen
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio
USER = "reviewed-writer"


@dataclass
class Served:
    url: str
    store: MemoryStore
    key: str


@pytest.fixture
def served() -> Iterator[Served]:
    clock = FakeClock(datetime.now(timezone.utc))  # the SDK checks expiry on the real clock
    store = MemoryStore(clock=clock)
    guard = Guard(
        store,
        clock=clock,
        request_reviewers=[TokenScreen()],
        response_reviewers=[TokenScreen()],
    )

    async def issue() -> str:
        user = await make_user(store, user_id=USER, grants="notes:write")
        return (await guard.issuer.issue(user.id, "ws-1")).access_key.reveal()

    key = anyio.run(issue)
    apps: list[ASGIApp] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[0](scope, receive, send)

    server = LoopbackServer(app, lifespan="on")
    apps.append(mcp_server.create_app(guard, f"{server.url}/mcp"))
    with server:
        yield Served(server.url, store, key)
    mcp_server.NOTES.pop(USER, None)


@asynccontextmanager
async def session(served: Served, statuses: list[int]) -> AsyncIterator[ClientSession]:
    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {served.key}"},
            timeout=10,
            event_hooks={"response": [record]},
        ) as http,
        streamable_http_client(served.url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


async def review_events(store: MemoryStore) -> list[dict[str, Any]]:
    return [e.event() for e in await store.read() if e.event()["action"] == "review.verdict"]


async def test_a_tool_call_with_blocked_arguments_never_reaches_the_tool(served: Served) -> None:
    statuses: list[int] = []
    failure: BaseException | None = None
    try:
        with anyio.fail_after(15):
            async with session(served, statuses) as client:
                await client.call_tool("add_note", {"text": f"note {BLOCK}"})
    except Exception as error:  # the SDK raises inside its task groups
        failure = error
    assert failure is not None, "the SDK saw no refusal"
    assert 403 in statuses
    assert mcp_server.NOTES.get(USER, []) == []
    events = await review_events(served.store)
    assert [(e["decision"], e["reason"]) for e in events] == [("deny", "dirty_token")]


async def test_tool_arguments_and_results_are_redacted_both_ways(served: Served) -> None:
    mcp_server.NOTES[USER] = [f"old {REDACT}"]  # already stored: only the response can hide it
    statuses: list[int] = []
    with anyio.fail_after(15):
        async with session(served, statuses) as client:
            added = await client.call_tool("add_note", {"text": f"new {REDACT}"})
            listed = await client.call_tool("list_notes", {})
    assert not added.is_error and not listed.is_error
    assert mcp_server.NOTES[USER] == [f"old {REDACT}", f"new {SCRUBBED}"]
    shown = listed.model_dump_json()
    assert REDACT not in shown
    assert f"old {SCRUBBED}" in shown
    events = await review_events(served.store)
    directions = {(e["detail"]["direction"], e["reason"]) for e in events}
    assert directions == {("in", "secret_token"), ("out", "secret_token")}
