"""The middleware decides a route no RouteRule covers by the route's own agentguard dependencies.

``install(app, guard)`` registers :class:`RouteRequirements`; the real
:class:`AgentGuardMiddleware` asks it before deciding. Tests go through FastAPI's test client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from agentguard import Guard, IssuedKeys, Level, Principal, Requirement, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._middleware import REQUIREMENTS_STATE_KEY
from agentguard.integrations.fastapi import (
    CurrentPrincipal,
    RouteRequirements,
    install,
    require,
)
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user


@dataclass
class Client:
    http: TestClient
    store: MemoryStore
    keys: dict[str, IssuedKeys]

    def get(self, path: str, who: str | None = None, method: str = "GET") -> Any:
        headers = {} if who is None else {"Authorization": f"Bearer {self.key(who)}"}
        return self.http.request(method, path, headers=headers)

    def key(self, who: str) -> str:
        return self.keys[who].access_key.reveal()

    def decisions(self) -> list[dict[str, object]]:
        entries = self.http.portal.call(self.store.read)  # type: ignore[union-attr]
        events = [entry.event() for entry in entries]
        return [event for event in events if event["action"] == "guard.decision"]


def user(event: dict[str, Any]) -> object:
    return event["actor"]["user"]


def build(guard: Guard) -> FastAPI:
    app = FastAPI()
    install(app, guard)
    app.add_middleware(AgentGuardMiddleware, guard=guard)

    @app.post("/contacts", status_code=201)
    async def add(principal: Annotated[Principal, require("crm", "write")]) -> str:
        return principal.user_id

    @app.get("/items/{item_id}", dependencies=[require("items")])
    async def item(item_id: int) -> int:
        return item_id

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> str:
        return principal.user_id

    @app.get("/open")
    async def open_route() -> str:
        return "nobody declared anything"

    @app.put("/both", dependencies=[require("crm", "read")])
    async def both(principal: Annotated[Principal, require("crm", "write")]) -> str:
        return principal.user_id

    @app.get("/admin/me")  # under the admin rule: the rule decides, not the dependency
    async def admin_me(principal: CurrentPrincipal) -> str:
        return principal.user_id

    router = APIRouter(prefix="/reports", dependencies=[require("reports")])

    @router.get("/{year}")
    async def report(year: int) -> int:
        return year

    @router.delete("/{year}", dependencies=[require("reports", "write")])
    async def drop(year: int) -> int:
        return -year

    app.include_router(router, prefix="/v1")

    sub = FastAPI()
    install(sub, guard)

    @sub.get("/notes/{note}")
    async def note(note: str, principal: Annotated[Principal, require("notes")]) -> str:
        return note

    @sub.get("/plain")
    async def plain() -> str:
        return "plain"

    app.mount("/sub", sub)
    return app


@pytest.fixture
def client() -> Iterator[Client]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/admin", service="admin")], clock=clock)
    grants = {
        "writer": "crm:write items:read reports:read notes:read",
        "reader": "crm:read",
        "reporter": "reports:write",
        "admin": "admin:read",
    }

    async def issue(user_id: str) -> IssuedKeys:
        user = await make_user(store, user_id=user_id, grants=grants[user_id])
        return await guard.issuer.issue(user.id, "ws-1")

    with TestClient(build(guard), raise_server_exceptions=True) as http:
        keys = {who: http.portal.call(issue, who) for who in grants}
        yield Client(http, store, keys)


def test_a_route_with_require_only_needs_no_rule(client: Client) -> None:
    before = len(client.decisions())
    allowed = client.get("/contacts", "writer", method="POST")
    assert (allowed.status_code, allowed.json()) == (201, "writer")
    refused = client.get("/contacts", "reader", method="POST")
    assert refused.status_code == 403
    assert refused.json()["reason"] == "insufficient_scope"
    assert refused.json()["scope"] == "crm:write"
    events = client.decisions()[before:]
    assert [(e["decision"], e["service"], user(e)) for e in events] == [
        ("allow", "crm", "writer"),
        ("deny", "crm", "reader"),
    ]


def test_without_a_key_the_declared_route_answers_401(client: Client) -> None:
    response = client.get("/contacts", method="POST")
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_credentials"


def test_a_route_without_agentguard_dependencies_stays_refused(client: Client) -> None:
    response = client.get("/open", "writer")
    assert response.status_code == 403
    assert response.json()["reason"] == "no_route_rule"
    assert client.get("/sub/plain", "writer").json()["reason"] == "no_route_rule"
    assert client.get("/nowhere", "writer").json()["reason"] == "no_route_rule"


def test_a_method_the_route_does_not_serve_is_refused_before_the_route(client: Client) -> None:
    response = client.get("/contacts", "writer", method="GET")
    assert response.status_code == 403
    assert response.json()["reason"] == "no_route_rule"


def test_current_principal_alone_admits_any_valid_key(client: Client) -> None:
    assert client.get("/me", "reader").json() == "reader"
    assert client.get("/me", "admin").json() == "admin"
    assert client.get("/me").status_code == 401


def test_path_parameters(client: Client) -> None:
    assert client.get("/items/7", "writer").json() == 7
    assert client.get("/items/7", "reader").json()["scope"] == "items:read"
    assert client.get("/items/seven", "reader").json()["scope"] == "items:read"
    assert client.get("/items/seven", "writer").status_code == 422  # the route's own validation
    assert client.get("/items/7/more", "writer").json()["reason"] == "no_route_rule"


def test_the_strictest_declared_level_decides_and_is_audited_once(client: Client) -> None:
    before = len(client.decisions())
    response = client.get("/both", "reader", method="PUT")
    assert response.json()["scope"] == "crm:write"
    assert client.get("/both", "writer", method="PUT").json() == "writer"
    events = client.decisions()[before:]
    assert [(e["decision"], user(e)) for e in events] == [
        ("deny", "reader"),
        ("allow", "writer"),
    ]


def test_routers_with_prefixes_and_their_dependencies(client: Client) -> None:
    assert client.get("/v1/reports/2024", "writer").json() == 2024
    assert client.get("/v1/reports/2024", "reader").json()["scope"] == "reports:read"
    assert client.get("/v1/reports/2024", "writer", method="DELETE").json()["scope"] == (
        "reports:write"
    )
    assert client.get("/v1/reports/2024", "reporter", method="DELETE").json() == -2024
    assert client.get("/reports/2024", "writer").json()["reason"] == "no_route_rule"


def test_mounted_apps(client: Client) -> None:
    assert client.get("/sub/notes/hello", "writer").json() == "hello"
    assert client.get("/sub/notes/hello", "reader").json()["scope"] == "notes:read"


def test_a_rule_covering_the_path_stays_authoritative(client: Client) -> None:
    """A CurrentPrincipal route under the admin rule still needs admin:read."""
    refused = client.get("/admin/me", "writer")
    assert (refused.status_code, refused.json()["scope"]) == (403, "admin:read")
    assert client.get("/admin/me", "admin").json() == "admin"
    assert client.get("/ADMIN/me", "writer").status_code == 403  # every reading of the path


def test_install_registers_the_source() -> None:
    guard = Guard(MemoryStore())
    app = FastAPI()
    install(app, guard)
    source = getattr(app.state, REQUIREMENTS_STATE_KEY)
    assert isinstance(source, RouteRequirements)
    assert source.guard is guard
    assert "RouteRequirements(guard=Guard(" in repr(source)


def test_requirements_are_computed_once_per_route() -> None:
    app = FastAPI()
    source = RouteRequirements(app, Guard(MemoryStore()))

    @app.get("/x", dependencies=[require("crm", Level.WRITE)])
    async def x() -> None:
        return None

    scope = {"type": "http", "method": "GET", "path": "/x", "root_path": "", "headers": []}
    assert source(scope) == Requirement("crm", Level.WRITE)
    assert len(source._declared) == 1
    assert source(scope) == Requirement("crm", Level.WRITE)
    assert len(source._declared) == 1
    assert source({**scope, "path": "/y"}) is None
    assert source({**scope, "type": "websocket"}) is None
