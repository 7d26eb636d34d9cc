"""The MCP conformance suite's "everything" server (``mcp`` SDK), with or without agentguard.

It has every tool, prompt and resource that ``@modelcontextprotocol/conformance`` 0.1.16 calls in
its server scenarios, with the names, arguments and results its checks read, plus logging,
completions, resource subscriptions, progress, sampling and elicitation round trips, and an event
store so a tool can close its SSE stream and the client resume with ``Last-Event-ID``.

:func:`guarded_app` puts it behind agentguard the way ``examples/mcp_server.py`` does:
:class:`AgentGuardMCP` in front, the guard as the SDK's token verifier, and every tool checked
with :func:`require_tool` against the caller's live grants (``conformance:read``; the one tool
that needs ``admin:write`` is hidden from the conformance user, and refused if called).
:func:`plain_app` is the same server without the guard: the baseline that tells SDK gaps from
guard gaps.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.shared.message import ServerMessageMetadata
from pydantic import AnyHttpUrl
from starlette.applications import Starlette

from agentguard import Guard
from agentguard.asgi import ProtectedResourceMetadata
from agentguard.integrations.mcp import AgentGuardMCP, AgentGuardTokenVerifier, require_tool
from mcp import types
from tests.mcp_conformance.event_store import MemoryEventStore
from tests.mcp_conformance.payloads import (
    CONTACT_SCHEMA,
    DEFAULTS_SCHEMA,
    ENUMS_SCHEMA,
    JSON_SCHEMA_2020_12,
    PNG,
    WAV,
)

__all__ = [
    "RESTRICTED_TOOL",
    "SCOPES",
    "ConformanceState",
    "build_server",
    "guarded_app",
    "plain_app",
]

#: What the conformance user is granted; the restricted tool needs what it is not.
SCOPES = ("conformance:read", "conformance:write")
RESTRICTED_TOOL = "admin_reset"
_LEVELS: tuple[types.LoggingLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)


@dataclass
class ConformanceState:
    """What the server remembers between requests: the log level and the subscriptions."""

    log_level: types.LoggingLevel = "debug"
    subscriptions: set[str] = field(default_factory=set)


async def _log(state: ConformanceState, ctx: Context, level: types.LoggingLevel, text: str) -> None:
    """``notifications/message`` on this request's stream, if ``level`` passes the filter."""
    if _LEVELS.index(level) < _LEVELS.index(state.log_level):
        return
    # Sent as a plain notification: the SDK's logging helpers warn that logging is deprecated
    # in its newest protocol revision, which the 2025-11-25 suite does not speak.
    params = types.LoggingMessageNotificationParams(level=level, data=text)
    await ctx.session.send_notification(
        types.LoggingMessageNotification(params=params), related_request_id=ctx.request_id
    )


Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def _unguarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def build_server(
    state: ConformanceState, guard: Guard | None = None, resource: str = ""
) -> MCPServer:
    """The server; with ``guard``, every tool needs ``conformance:read`` (or more)."""
    read: Callable[[Callable[..., Any]], Callable[..., Any]] = (
        require_tool("conformance", "read") if guard is not None else _unguarded
    )

    @read
    async def json_schema_2020_12_tool(
        name: str | None = None, address: dict[str, str] | None = None
    ) -> str:
        """Tool with JSON Schema 2020-12 features"""
        return json.dumps({"name": name, "address": address})

    schema_tool = Tool.from_function(json_schema_2020_12_tool, name="json_schema_2020_12_tool")
    options: dict[str, Any] = {}
    if guard is not None:
        origin = resource.rsplit("/", 1)[0]
        options = {
            "token_verifier": AgentGuardTokenVerifier(guard, resource=resource),
            "auth": AuthSettings(
                issuer_url=AnyHttpUrl(origin),
                resource_server_url=AnyHttpUrl(resource),
                validate_token_resource=True,
            ),
        }
    server = MCPServer(
        "agentguard-conformance",
        version="1.0.0",
        tools=[schema_tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12})],
        **options,
    )
    _add_tools(server, state, read)
    if guard is not None:

        @server.tool(name=RESTRICTED_TOOL)
        @require_tool("admin", "write", name=RESTRICTED_TOOL)
        async def admin_reset() -> str:
            """Needs admin:write, which the conformance user lacks: every call is refused."""
            return "reset"

    _add_resources(server, state)
    _add_prompts(server)
    _add_handlers(server, state)
    return server


def _add_tools(
    server: MCPServer, state: ConformanceState, read: Callable[[Callable[..., Any]], Any]
) -> None:
    @server.tool()
    @read
    async def test_simple_text() -> str:
        """Returns simple text content."""
        return "This is a simple text response for testing."

    @server.tool(structured_output=False)
    @read
    async def test_image_content() -> list[types.ImageContent]:
        """Returns image content."""
        return [types.ImageContent(type="image", data=PNG, mime_type="image/png")]

    @server.tool(structured_output=False)
    @read
    async def test_audio_content() -> list[types.AudioContent]:
        """Returns audio content."""
        return [types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool(structured_output=False)
    @read
    async def test_embedded_resource() -> list[types.EmbeddedResource]:
        """Returns an embedded resource."""
        return [_embedded("test://embedded-resource", "This is an embedded resource content.")]

    @server.tool(structured_output=False)
    @read
    async def test_multiple_content_types() -> list[types.ContentBlock]:
        """Returns text, image and resource content."""
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mime_type="image/png"),
            _embedded(
                "test://mixed-content-resource", '{"test":"data","value":123}', "application/json"
            ),
        ]

    @server.tool()
    @read
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three log messages while it runs."""
        await _log(state, ctx, "info", "Tool execution started")
        await anyio.sleep(0.05)
        await _log(state, ctx, "info", "Tool processing data")
        await anyio.sleep(0.05)
        await _log(state, ctx, "info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool()
    @read
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100."""
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100, f"Completed step {step} of 100")
            if step < 100:
                await anyio.sleep(0.05)
        return "Tool with progress executed successfully"

    @server.tool()
    @read
    async def test_error_handling() -> str:
        """Always fails."""
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool()
    @read
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's model to answer ``prompt``."""
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=prompt)
        )
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=100)
        )
        result = await ctx.session.send_request(
            request,
            types.CreateMessageResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
        answer = result.content.text if isinstance(result.content, types.TextContent) else ""
        return f"LLM response: {answer}"

    async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> str:
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        content = json.dumps(result.content if result.action == "accept" else {})
        return f"action={result.action}, content={content}"

    @server.tool()
    @read
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a username and email address."""
        return "User response: " + await elicit(ctx, message, CONTACT_SCHEMA)

    @server.tool()
    @read
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicits fields of every primitive type, each with a default (SEP-1034)."""
        answer = await elicit(ctx, "Please provide user information", DEFAULTS_SCHEMA)
        return "Elicitation completed: " + answer

    @server.tool()
    @read
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicits the five enum shapes of SEP-1330."""
        answer = await elicit(ctx, "Please select values", ENUMS_SCHEMA)
        return "Elicitation completed: " + answer

    @server.tool()
    @read
    async def test_reconnection(ctx: Context) -> str:
        """Closes its SSE stream mid-call; the result arrives when the client resumes."""
        await _log(state, ctx, "info", "Before disconnect")
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)
        await _log(state, ctx, "info", "After reconnect")
        return "Reconnection test completed"


def _embedded(uri: str, text: str, mime_type: str = "text/plain") -> types.EmbeddedResource:
    contents = types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    return types.EmbeddedResource(type="resource", resource=contents)


def _add_resources(server: MCPServer, state: ConformanceState) -> None:
    @server.resource("test://static-text", mime_type="text/plain", description="Static text")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png", description="A PNG image")
    def static_binary() -> bytes:
        return base64.b64decode(PNG)

    @server.resource(
        "test://template/{id}/data", mime_type="application/json", description="Templated"
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", mime_type="text/plain", description="Watched")
    def watched() -> str:
        return f"Watched resource content ({len(state.subscriptions)} subscriptions)"


def _add_prompts(server: MCPServer) -> None:
    @server.prompt()
    def test_simple_prompt() -> list[UserMessage]:
        """A prompt without arguments."""
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        """A prompt with two required arguments."""
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        """A prompt that embeds the resource it is given."""
        return [
            UserMessage(_embedded(resourceUri, "Embedded resource content for testing.")),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt with an image."""
        return [
            UserMessage(types.ImageContent(type="image", data=PNG, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]


_COMPLETIONS = ("paris", "park", "party", "test", "testing")


def _add_handlers(server: MCPServer, state: ConformanceState) -> None:
    async def complete(
        ctx: ServerRequestContext[Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        values = [value for value in _COMPLETIONS if value.startswith(params.argument.value)]
        completion = types.Completion(values=values, total=len(values), has_more=False)
        return types.CompleteResult(completion=completion)

    async def set_level(
        ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        state.log_level = params.level
        return types.EmptyResult()

    async def subscribe(
        ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        state.subscriptions.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        state.subscriptions.discard(str(params.uri))
        return types.EmptyResult()

    # MCPServer has no decorators for three of these (and an untyped one for completions); the
    # SDK's own conformance server registers them the same way. A handler is its capability.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("completion/complete", types.CompleteRequestParams, complete)
    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe
    )


def _http_app(server: MCPServer, guard: Guard | None = None) -> Starlette:
    app = server.streamable_http_app(event_store=MemoryEventStore(), retry_interval=100)
    if guard is not None:
        app.router.lifespan_context = _flush_audit(guard, app.router.lifespan_context)
    return app


def _flush_audit(guard: Guard, inner: Lifespan) -> Lifespan:
    """The SDK's lifespan (its session manager), then the guard's buffered audit written out."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            try:
                yield state
            finally:
                await guard.audit.flush()

    return lifespan


def plain_app(state: ConformanceState | None = None) -> Starlette:
    """The server alone (no guard): the SDK's own behaviour, for the baseline."""
    return _http_app(build_server(state or ConformanceState()))


def guarded_app(
    guard: Guard, resource: str, state: ConformanceState | None = None
) -> AgentGuardMCP:
    """The server behind ``guard``, with RFC 9728 metadata, as ``examples/mcp_server.py``."""
    metadata = ProtectedResourceMetadata.from_guard(
        guard,
        resource=resource,
        authorization_servers=[resource.rsplit("/", 1)[0]],
        scopes_supported=list(SCOPES),
        resource_name="agentguard MCP conformance server",
    )
    app = _http_app(build_server(state or ConformanceState(), guard, resource), guard)
    return AgentGuardMCP(app, guard, metadata=metadata)
