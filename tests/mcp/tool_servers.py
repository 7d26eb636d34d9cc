"""An SDK MCP server with four kinds of tool, and an SDK client session that records statuses.

``list_notes`` (``require_tool("notes", "read")``), ``add_note`` (``require_tool("notes",
"write")``), ``count_notes`` (no requirement, annotated ``readOnlyHint``) and ``purge`` (no
requirement, no annotation). Every tool that runs appends its name to ``ran``, so a test can
prove a refused tool never ran.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from agentguard.integrations.mcp import require_tool

ALL_TOOLS = ["add_note", "count_notes", "list_notes", "purge"]


def notes_server(ran: list[str], *, guarded: bool = True) -> MCPServer:
    """The four tools; ``guarded=False`` leaves out ``require_tool`` (a remote server)."""
    server = MCPServer("notes")

    def checked(level: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if guarded:
            return require_tool("notes", level)
        return lambda fn: fn

    @server.tool()
    @checked("read")
    async def list_notes() -> list[str]:
        """The notes."""
        ran.append("list_notes")
        return ["one"]

    @server.tool()
    @checked("write")
    async def add_note(text: str) -> str:
        """Add a note."""
        ran.append("add_note")
        return f"added {text}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def count_notes() -> int:
        """How many notes there are."""
        ran.append("count_notes")
        return 1

    @server.tool()
    async def purge() -> str:
        """Delete every note."""
        ran.append("purge")
        return "purged"

    return server


@dataclass
class Seen:
    """Every HTTP response an SDK session received: status and ``WWW-Authenticate``."""

    responses: list[tuple[int, str]] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [status for status, _ in self.responses]

    def challenge(self, status: int) -> str:
        return next(value for code, value in self.responses if code == status)


@asynccontextmanager
async def session(url: str, key: str, seen: Seen | None = None) -> AsyncIterator[ClientSession]:
    """An initialised SDK client session on ``url`` (the MCP endpoint) with ``key``."""

    async def record(response: httpx2.Response) -> None:
        if seen is not None:
            challenge = response.headers.get("www-authenticate", "")
            seen.responses.append((response.status_code, challenge))

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
            event_hooks={"response": [record]},
        ) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        yield client


async def listed(url: str, key: str) -> list[str]:
    """The tool names ``key`` sees in ``tools/list``."""
    async with session(url, key) as client:
        tools = await client.list_tools()
    return sorted(tool.name for tool in tools.tools)


async def refused_call(url: str, key: str, tool: str, arguments: dict[str, Any]) -> Seen:
    """Call ``tool`` through the SDK client, which must fail; the responses it saw."""
    seen = Seen()
    failed = False
    try:
        async with session(url, key, seen) as client:
            await client.call_tool(tool, arguments)
    except Exception:  # the SDK raises inside its task groups
        failed = True
    assert failed, f"the SDK called {tool} without an error"
    return seen


def call_body(*calls: tuple[str, dict[str, Any]], batch: bool = False) -> bytes:
    """A JSON-RPC ``tools/call`` body (a batch when ``batch`` or several calls)."""
    messages = [
        {
            "jsonrpc": "2.0",
            "id": number,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        for number, (name, arguments) in enumerate(calls, start=1)
    ]
    document: Any = messages if batch or len(messages) > 1 else messages[0]
    return json.dumps(document).encode()


HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
