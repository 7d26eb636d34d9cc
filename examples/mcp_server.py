"""An MCP server (official ``mcp`` SDK) guarded by agentguard: two tools, one read, one write.

    uvicorn examples.mcp_server:app            # then connect an MCP client with a key

Any live agentguard key opens the MCP endpoint; ``list_notes`` needs ``notes:read`` and
``add_note`` needs ``notes:write``, checked against the key's user's live grants and audited.
A request without a key gets ``401`` with ``WWW-Authenticate: Bearer ...
resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"``.
"""

from __future__ import annotations

from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl

from agentguard import Guard, IssuedKeys, MemoryStore, current_principal
from agentguard.asgi.metadata import ProtectedResourceMetadata
from agentguard.integrations.mcp import AgentGuardMCP, AgentGuardTokenVerifier, require_tool
from agentguard.testing import make_user

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
    return AgentGuardMCP(mcp_app, guard, metadata=metadata)


store = MemoryStore()
guard = Guard(store)  # no path rules: each tool declares its permission
app = create_app(guard)


async def issue_demo_keys(user_id: str = "alice", scope: str = "notes:read") -> IssuedKeys:
    """A user with ``scope`` and a key pair for them (for trying the example)."""
    user = await make_user(store, user_id=user_id, grants=scope)
    return await guard.issuer.issue(user.id, "ws-1")
