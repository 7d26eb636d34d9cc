"""A Starlette app guarded by agentguard: the quickstart, runnable.

    python -m examples.starlette_app --print-keys     # prints alice's keys, serves on :8000
    curl -H "Authorization: Bearer <access key>" http://127.0.0.1:8000/crm/contacts
    curl -d grant_type=refresh_token -d refresh_token=<refresh key> \\
        http://127.0.0.1:8000/oauth/token              # a new pair
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # then: 401

``uvicorn examples.starlette_app:app`` serves the same app without printing keys. Users and keys
live in ``agentguard-examples.db`` (see ``examples/launch.py``). The app keeps contacts per
user; agents read with ``crm:read`` and write with ``crm:write``.
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentguard import Guard, RouteRule, current_principal
from agentguard.asgi import AgentGuardMiddleware, OAuthApp
from agentguard.storage import open_store
from examples import launch

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


def create_app(store_url: str) -> Starlette:
    """The guarded app, its users and keys in the store at ``store_url``."""
    guard = Guard(
        open_store(store_url),
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
            Mount("/oauth", app=OAuthApp(guard)),
        ],
        lifespan=launch.lifespan(guard),  # closes the store when the server stops
    )
    app.add_middleware(AgentGuardMiddleware, guard=guard, public_paths=["/oauth"])
    return app


app = create_app(launch.store_url())

if __name__ == "__main__":
    args = launch.options(__doc__)
    launch.demo_keys(args, grants="crm:write")
    uvicorn.run(create_app(args.store), host=args.host, port=args.port)
