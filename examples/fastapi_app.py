"""A FastAPI app guarded by agentguard: middleware for path rules, dependencies per operation.

    python -m examples.fastapi_app --print-keys       # prints alice's keys, serves on :8000
    curl -H "Authorization: Bearer <access key>" http://127.0.0.1:8000/crm/contacts
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # then: 401

``uvicorn examples.fastapi_app:app`` serves the same app without printing keys; ``/docs`` shows
the agentguard security scheme. Users and keys live in ``agentguard-examples.db`` (see
``examples/launch.py``). ``/crm/...`` is guarded by the middleware's rule (``crm``, level from
the method); ``/reports`` is not under any rule, so it is listed as public to the middleware and
protected by its dependency alone (``reports:read``). ``/oauth/token`` renews a key pair.
"""

from __future__ import annotations

from typing import Annotated

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from agentguard import Guard, Principal, RouteRule
from agentguard.asgi import AgentGuardMiddleware, OAuthApp
from agentguard.integrations.fastapi import CurrentPrincipal, install, require
from agentguard.storage import open_store
from examples import launch

CONTACTS: dict[str, list[str]] = {}


class Contact(BaseModel):
    name: str


def create_app(store_url: str) -> FastAPI:
    """The guarded app, its users and keys in the store at ``store_url``."""
    guard = Guard(open_store(store_url), rules=[RouteRule("/crm", service="crm")])
    app = FastAPI(title="agentguard FastAPI example", lifespan=launch.lifespan(guard))
    install(app, guard)  # app.state.agentguard = guard, and agentguard's error responses
    app.add_middleware(
        AgentGuardMiddleware,
        guard=guard,
        public_paths=["/reports", "/oauth", "/docs", "/openapi.json"],
    )
    app.mount("/oauth", OAuthApp(guard))

    @app.get("/crm/contacts")
    async def list_contacts(principal: Annotated[Principal, require("crm", "read")]) -> list[str]:
        return CONTACTS.get(principal.user_id, [])

    @app.post("/crm/contacts", status_code=201)
    async def add_contact(
        contact: Contact, principal: Annotated[Principal, require("crm", "write")]
    ) -> Contact:
        CONTACTS.setdefault(principal.user_id, []).append(contact.name)
        return contact

    @app.get("/reports/summary")
    async def summary(
        principal: Annotated[Principal, require("reports", "read")],
    ) -> dict[str, int]:
        return {"contacts": len(CONTACTS.get(principal.user_id, []))}

    @app.get("/crm/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user": principal.user_id, "workspace": principal.workspace_id}

    return app


app = create_app(launch.store_url())

if __name__ == "__main__":
    args = launch.options(__doc__)
    launch.demo_keys(args, grants="crm:write reports:read")
    uvicorn.run(create_app(args.store), host=args.host, port=args.port)
