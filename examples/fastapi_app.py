"""A FastAPI app guarded by agentguard: middleware for path rules, dependencies per operation.

    uvicorn examples.fastapi_app:app           # /docs shows the agentguard security scheme

``/crm/...`` is guarded by the middleware's rule (``crm``, level from the method);
``/reports`` is not under any rule, so it is listed as public to the middleware and protected
by its dependency alone (``reports:read``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel

from agentguard import Guard, IssuedKeys, MemoryStore, Principal, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.integrations.fastapi import CurrentPrincipal, install, require
from agentguard.testing import make_user

CONTACTS: dict[str, list[str]] = {}


class Contact(BaseModel):
    name: str


store = MemoryStore()
guard = Guard(store, rules=[RouteRule("/crm", service="crm")])
app = FastAPI(title="agentguard FastAPI example")
install(app, guard)
app.add_middleware(
    AgentGuardMiddleware, guard=guard, public_paths=["/reports", "/docs", "/openapi.json"]
)


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
async def summary(principal: Annotated[Principal, require("reports", "read")]) -> dict[str, int]:
    return {"contacts": len(CONTACTS.get(principal.user_id, []))}


@app.get("/crm/me")
async def me(principal: CurrentPrincipal) -> dict[str, str]:
    return {"user": principal.user_id, "workspace": principal.workspace_id}


async def issue_demo_keys(user_id: str = "alice", scope: str = "crm:read") -> IssuedKeys:
    """A user with ``scope`` and a key pair for them (for trying the example)."""
    user = await make_user(store, user_id=user_id, grants=scope)
    return await guard.issuer.issue(user.id, "ws-1")
