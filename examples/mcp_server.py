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
resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"``.

The server is its own authorization server: agentguard's token endpoint is at ``/oauth`` (where
``AgentAuth`` renews keys; ``agentguard keys issue --token-url http://127.0.0.1:8000/oauth/token``)
and its RFC 8414 document at ``/.well-known/oauth-authorization-server``; any other
``/.well-known/`` path is a ``404``. It takes Bearer keys (``keys issue --bearer``; a server
that accepts DPoP-bound keys needs ``Guard(..., dpop=DPoPPolicy(public_origin=...))``), and a
key issued for another resource (``keys issue --audience URL``) is refused.
"""

from __future__ import annotations

import uvicorn
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.routing import Mount

from agentguard import Guard, current_principal
from agentguard.asgi import AuthorizationServerMetadata, OAuthApp, ProtectedResourceMetadata
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
    """The ASGI app: the SDK's streamable HTTP app behind the guard, with RFC 9728 metadata,
    and agentguard's token endpoint (``/oauth``) with its RFC 8414 document beside it."""
    origin = resource.rsplit("/", 1)[0]
    metadata = ProtectedResourceMetadata.from_guard(
        guard,
        resource=resource,
        authorization_servers=[origin],  # this server: the token endpoint is at /oauth
        scopes_supported=["notes:read", "notes:write"],
        resource_name="agentguard notes",
    )
    mcp_app = build_server(guard, resource).streamable_http_app()
    # Refresh keys are presented at /oauth/token, not access keys: a public path.
    mcp_app.router.routes.append(Mount("/oauth", app=OAuthApp(guard)))
    # The SDK's lifespan runs its session manager; ours wraps it and closes the store after.
    mcp_app.router.lifespan_context = launch.lifespan(guard, mcp_app.router.lifespan_context)
    # service="notes": a tool without @require_tool needs notes:read if it is annotated
    # readOnlyHint, else notes:write.
    return AgentGuardMCP(
        mcp_app,
        guard,
        metadata=metadata,
        service="notes",
        public_paths=["/oauth"],
        authorization_server=AuthorizationServerMetadata.from_guard(guard, issuer=origin),
    )


app = create_app(Guard(open_store(launch.store_url())))  # no path rules: each tool has its own

if __name__ == "__main__":
    args = launch.options(__doc__)
    launch.demo_keys(args, grants="notes:write")
    resource = f"http://{args.host}:{args.port}/mcp"
    uvicorn.run(create_app(Guard(open_store(args.store)), resource), host=args.host, port=args.port)
