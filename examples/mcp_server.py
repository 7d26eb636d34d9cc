"""An MCP server (official ``mcp`` SDK) guarded by agentguard: two tools, one read, one write.

    python -m examples.mcp_server --print-keys        # prints alice's keys, serves on :8000
    # connect an MCP client to http://127.0.0.1:8000/mcp with "Authorization: Bearer <key>"
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # then: 401

``uvicorn examples.mcp_server:app`` serves the same app without printing keys. Users and keys
live in ``agentguard-examples.db`` (see ``examples/launch.py``). Any live agentguard key opens
the MCP endpoint; ``list_notes`` needs ``notes:read`` and ``add_note`` needs ``notes:write``
(or a grant for that tool alone: ``notes/add_note:write``), checked against the key's user's
live grants before the SDK runs the tool, and audited. A reader's ``tools/list`` shows
``list_notes`` only; a reader's ``add_note`` call is a ``403`` with ``WWW-Authenticate: Bearer
error="insufficient_scope", scope="notes/add_note:write"``. A request without a key gets
``401`` with ``WWW-Authenticate: Bearer ...
resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"``; any other
``/.well-known/`` path is a ``404``.
"""

from __future__ import annotations

import uvicorn
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl

from agentguard import Guard, current_principal
from agentguard.asgi import ProtectedResourceMetadata
from agentguard.integrations.mcp import AgentGuardMCP, AgentGuardTokenVerifier, require_tool
from agentguard.storage import open_store
from examples import launch

RESOURCE = "http://127.0.0.1:8000/mcp"

NOTES: dict[str, list[str]] = {}


def build_server(guard: Guard, resource: str) -> MCPServer:
    """The MCP server; its token verifier is the guard."""
    origin = resource.rsplit("/", 1)[0]
    server = MCPServer(
        "notes",
        token_verifier=AgentGuardTokenVerifier(guard, resource=resource),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(origin),
            resource_server_url=AnyHttpUrl(resource),
            validate_token_resource=True,
        ),
    )

    @server.tool()
    @require_tool("notes", "read")
    async def list_notes() -> list[str]:
        """The caller's notes."""
        return NOTES.get(current_principal().user_id, [])

    @server.tool()
    @require_tool("notes", "write")
    async def add_note(text: str) -> str:
        """Add a note for the caller."""
        NOTES.setdefault(current_principal().user_id, []).append(text)
        return f"added note {len(NOTES[current_principal().user_id])}"

    return server


def create_app(guard: Guard, resource: str = RESOURCE) -> AgentGuardMCP:
    """The ASGI app: the SDK's streamable HTTP app behind the guard, with RFC 9728 metadata."""
    metadata = ProtectedResourceMetadata.from_guard(
        guard,
        resource=resource,
        authorization_servers=[resource.rsplit("/", 1)[0]],
        scopes_supported=["notes:read", "notes:write"],
        resource_name="agentguard notes",
    )
    mcp_app = build_server(guard, resource).streamable_http_app()
    # The SDK's lifespan runs its session manager; ours wraps it and closes the store after.
    mcp_app.router.lifespan_context = launch.lifespan(guard, mcp_app.router.lifespan_context)
    # service="notes": a tool without @require_tool needs notes:read if it is annotated
    # readOnlyHint, else notes:write.
    return AgentGuardMCP(mcp_app, guard, metadata=metadata, service="notes")


app = create_app(Guard(open_store(launch.store_url())))  # no path rules: each tool has its own

if __name__ == "__main__":
    args = launch.options(__doc__)
    launch.demo_keys(args, grants="notes:write")
    resource = f"http://{args.host}:{args.port}/mcp"
    uvicorn.run(create_app(Guard(open_store(args.store)), resource), host=args.host, port=args.port)
