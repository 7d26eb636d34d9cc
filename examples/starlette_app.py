"""A Starlette app guarded by agentguard: the quickstart, runnable.

    uvicorn examples.starlette_app:app        # then call it with a key from `issue_demo_keys`

The app keeps contacts per user; agents read with `crm:read` and write with `crm:write`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentguard import Guard, IssuedKeys, MemoryStore, RouteRule, current_principal
from agentguard.asgi import AgentGuardMiddleware
from agentguard.testing import make_user

CONTACTS: dict[str, list[str]] = {}


async def list_contacts(request: Request) -> JSONResponse:
    principal = request.state.agentguard_principal
    return JSONResponse({"contacts": CONTACTS.get(principal.user_id, [])})


async def add_contact(request: Request) -> JSONResponse:
    principal = current_principal()  # the same Principal, from the contextvar
    name = (await request.json())["name"]
    CONTACTS.setdefault(principal.user_id, []).append(str(name))
    return JSONResponse({"added": name}, status_code=201)


async def search(request: Request) -> JSONResponse:
    query = str((await request.json()).get("q", ""))
    principal = current_principal()
    found = [c for c in CONTACTS.get(principal.user_id, []) if query.lower() in c.lower()]
    return JSONResponse({"found": found})


store = MemoryStore()
guard = Guard(
    store,
    rules=[
        RouteRule("/crm", service="crm"),
        RouteRule("/crm/search", service="crm", methods={"POST": "read"}),
    ],
)
app = Starlette(
    routes=[
        Route("/crm/contacts", list_contacts, methods=["GET"]),
        Route("/crm/contacts", add_contact, methods=["POST"]),
        Route("/crm/search", search, methods=["POST"]),
        Mount("/oauth", app=guard.oauth_app()),
    ]
)
app.add_middleware(AgentGuardMiddleware, guard=guard, public_paths=["/oauth"])


async def issue_demo_keys(user_id: str = "alice", scope: str = "crm:read") -> IssuedKeys:
    """Create ``user_id`` with ``scope`` in account ``acme``/workspace ``sales``; issue keys."""
    await make_user(store, user_id=user_id, account_id="acme", workspace_id="sales", grants=scope)
    return await guard.issuer.issue(user_id, "sales")
