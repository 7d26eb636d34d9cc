"""A guarded Starlette app with the OAuth endpoints, on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from agentguard import Guard, IssuedKeys, RouteRule, User, current_principal
from agentguard.asgi import AgentGuardMiddleware, OAuthApp, principal_from_scope
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

INTROSPECTION_SECRET = "introspect-" + "s" * 32


@dataclass
class Setup:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    user: User
    keys: IssuedKeys
    client: httpx.AsyncClient

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.keys.access_key.reveal()}"}

    async def events(self) -> list[dict[str, object]]:
        return [e.event() for e in await self.store.read()]


async def contacts(request: Request) -> JSONResponse:
    principal = principal_from_scope(request.scope)
    assert current_principal() is principal
    return JSONResponse({"user": principal.user_id, "method": request.method})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"user": principal_from_scope(websocket.scope).user_id})
    await websocket.close()


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def build_app(guard: Guard) -> AgentGuardMiddleware:
    app = Starlette(
        routes=[
            Route("/crm/contacts", contacts, methods=["GET", "POST", "DELETE"]),
            Route("/projects/list", contacts),
            Route("/healthz", health),
            WebSocketRoute("/crm/ws", ws_echo),
            Mount("/oauth", app=OAuthApp(guard, introspection_secrets=[INTROSPECTION_SECRET])),
        ]
    )
    return AgentGuardMiddleware(app, guard, public_paths=["/oauth", "/healthz"])


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(
        store,
        rules=[
            RouteRule("/crm", service="crm"),
            # a read-only feed: websockets need write unless their rule says otherwise
            RouteRule("/crm/ws", service="crm", methods={"WEBSOCKET": "read"}),
            RouteRule("/projects", service="projects"),
        ],
        clock=clock,
    )
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    transport = httpx.ASGITransport(app=build_app(guard))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Setup(clock, store, guard, user, keys, client)
