"""The FastAPI dependencies through FastAPI's own test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agentguard import Guard, IssuedKeys, Principal
from agentguard.errors import ConfigurationError
from agentguard.integrations.fastapi import AgentGuardSecurity, CurrentPrincipal, install, require
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from examples import fastapi_app


@pytest.fixture
def example() -> Iterator[tuple[TestClient, IssuedKeys, IssuedKeys]]:
    app = fastapi_app.create_app("memory://")
    guard: Guard = app.state.agentguard

    async def issue(user_id: str, scope: str) -> IssuedKeys:
        user = await make_user(guard.store, user_id=user_id, grants=scope)
        return await guard.issuer.issue(user.id, "ws-1")

    with TestClient(app) as client:
        reader = client.portal.call(issue, "reader", "crm:read")
        writer = client.portal.call(issue, "writer", "crm:write reports:read")
        yield client, reader, writer


def auth(keys: IssuedKeys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.access_key.reveal()}"}


def test_read_and_write_with_the_right_keys(
    example: tuple[TestClient, IssuedKeys, IssuedKeys],
) -> None:
    client, reader, writer = example
    assert (
        client.post("/crm/contacts", json={"name": "Ada"}, headers=auth(writer)).status_code == 201
    )
    assert client.get("/crm/contacts", headers=auth(writer)).json() == ["Ada"]
    assert client.get("/crm/me", headers=auth(reader)).json() == {
        "user": "reader",
        "workspace": "ws-1",
    }


def test_write_with_a_read_key_is_refused_by_the_middleware(
    example: tuple[TestClient, IssuedKeys, IssuedKeys],
) -> None:
    client, reader, _ = example
    response = client.post("/crm/contacts", json={"name": "Eve"}, headers=auth(reader))
    assert response.status_code == 403
    assert response.json()["scope"] == "crm:write"


def test_dependency_alone_guards_a_public_path(
    example: tuple[TestClient, IssuedKeys, IssuedKeys],
) -> None:
    client, reader, writer = example
    missing = client.get("/reports/summary")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="agentguard"'
    assert missing.json()["reason"] == "missing_credentials"
    denied = client.get("/reports/summary", headers=auth(reader))
    assert denied.status_code == 403
    assert denied.json() == {
        "error": "insufficient_scope",
        "error_description": "this request needs reports:read",
        "reason": "insufficient_scope",
        "scope": "reports:read",
    }
    assert 'scope="reports:read"' in denied.headers["www-authenticate"]
    assert client.get("/reports/summary", headers=auth(writer)).status_code == 200


def test_openapi_declares_the_scheme_and_scopes(
    example: tuple[TestClient, IssuedKeys, IssuedKeys],
) -> None:
    client, _, _ = example
    document = client.get("/openapi.json").json()
    scheme = document["components"]["securitySchemes"]["agentguard"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "agentguard access key"
    paths = document["paths"]
    assert paths["/crm/contacts"]["post"]["security"] == [{"agentguard": ["crm:write"]}]
    assert paths["/crm/contacts"]["get"]["security"] == [{"agentguard": ["crm:read"]}]
    assert paths["/crm/me"]["get"]["security"] == [{"agentguard": []}]
    assert client.get("/docs").status_code == 200


# Module level: endpoint annotations are strings resolved in the module's namespace.
security = AgentGuardSecurity(scheme_name="keys")


@pytest.fixture
def bare() -> Iterator[tuple[TestClient, MemoryStore, IssuedKeys]]:
    """No middleware: the dependencies authenticate by themselves."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    app = FastAPI()
    app.state.agentguard = guard  # what install() does, without its exception handler

    @app.get("/notes", dependencies=[security.require("notes", "read")])
    async def notes() -> dict[str, bool]:
        return {"ok": True}

    @app.delete("/notes")
    async def delete(principal: Annotated[Principal, security.require("notes", "write")]) -> Any:
        return {"deleted_by": principal.user_id}

    with TestClient(app) as client:

        async def issue() -> IssuedKeys:
            user = await make_user(store, grants="notes:read")
            return await guard.issuer.issue(user.id, "ws-1")

        yield client, store, client.portal.call(issue)


def test_without_install_errors_use_fastapis_detail_shape(
    bare: tuple[TestClient, MemoryStore, IssuedKeys],
) -> None:
    client, store, keys = bare
    assert client.get("/notes", headers=auth(keys)).json() == {"ok": True}
    response = client.delete("/notes", headers=auth(keys))
    assert response.status_code == 403
    assert response.json()["detail"]["reason"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    events = [e.event() for e in client.portal.call(store.read)]  # type: ignore[union-attr]
    assert [(e["decision"], e["service"]) for e in events[-2:]] == [
        ("allow", "notes"),
        ("deny", "notes"),
    ]
    assert client.get("/openapi.json").json()["components"]["securitySchemes"]["keys"]


def test_missing_guard_is_a_configuration_error() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(principal: CurrentPrincipal) -> str:
        return principal.user_id

    with (
        TestClient(app, raise_server_exceptions=True) as client,
        pytest.raises(ConfigurationError, match=r"install\(app, guard\)"),
    ):
        client.get("/x")


def test_install_renders_refusals_like_the_middleware() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    app = FastAPI()
    install(app, guard)

    @app.get("/x")
    async def x(principal: Annotated[Principal, require("crm")]) -> str:
        return principal.user_id

    with TestClient(app) as client:
        response = client.get("/x", headers={"Authorization": "Bearer ag_at_" + "A" * 49})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["www-authenticate"].startswith('Bearer realm="agentguard", error=')
