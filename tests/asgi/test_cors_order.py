"""CORS and the guard: CORSMiddleware must be outside AgentGuardMiddleware (added last).

A browser's preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never
carries credentials, so a guard in front of CORSMiddleware refuses it and the browser blocks the
real request. With CORSMiddleware outermost, the preflight is answered before the guard and the
real request is still guarded, its refusals readable by the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from agentguard import Guard, IssuedKeys, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

ORIGIN = "https://app.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def contacts(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.state.agentguard_principal.user_id})


@dataclass
class Setup:
    client: TestClient
    store: MemoryStore
    keys: IssuedKeys

    def auth(self) -> dict[str, str]:
        return {"Origin": ORIGIN, "Authorization": f"Bearer {self.keys.access_key.reveal()}"}

    def decisions(self) -> int:
        entries = self.client.portal.call(self.store.read)  # type: ignore[union-attr]
        return sum(entry.event()["action"] == "guard.decision" for entry in entries)


def build(guard: Guard, *, cors_outermost: bool) -> Starlette:
    app = Starlette(routes=[Route("/crm/contacts", contacts, methods=["GET", "POST"])])
    cors = {
        "allow_origins": [ORIGIN],
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["authorization", "content-type", "dpop"],
        "expose_headers": ["www-authenticate"],
    }
    if cors_outermost:  # the documented order: the last add_middleware call is outermost
        app.add_middleware(AgentGuardMiddleware, guard=guard)
        app.add_middleware(CORSMiddleware, **cors)  # type: ignore[arg-type]
    else:
        app.add_middleware(CORSMiddleware, **cors)  # type: ignore[arg-type]
        app.add_middleware(AgentGuardMiddleware, guard=guard)
    return app


def setup_for(*, cors_outermost: bool) -> Iterator[Setup]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")], clock=clock)

    async def issue() -> IssuedKeys:
        user = await make_user(store, grants="crm:write")
        return await guard.issuer.issue(user.id, "ws-1")

    with TestClient(build(guard, cors_outermost=cors_outermost)) as client:
        yield Setup(client, store, client.portal.call(issue))


@pytest.fixture
def right() -> Iterator[Setup]:
    yield from setup_for(cors_outermost=True)


@pytest.fixture
def wrong() -> Iterator[Setup]:
    yield from setup_for(cors_outermost=False)


def test_preflight_is_answered_before_the_guard(right: Setup) -> None:
    before = right.decisions()
    response = right.client.options("/crm/contacts", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert right.decisions() == before  # the guard never saw it


def test_the_real_request_is_still_guarded(right: Setup) -> None:
    refused = right.client.post("/crm/contacts", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.json()["reason"] == "missing_credentials"
    # The refusal carries CORS headers, so the page can read it (and its challenge).
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    allowed = right.client.post("/crm/contacts", headers=right.auth())
    assert (allowed.status_code, allowed.json()) == (200, {"user": "user-1"})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN


def test_an_options_request_that_is_no_preflight_is_guarded(right: Setup) -> None:
    response = right.client.options("/crm/contacts", headers={"Origin": ORIGIN})
    assert response.status_code == 401


def test_a_preflight_from_another_origin_never_reaches_the_app(right: Setup) -> None:
    response = right.client.options(
        "/crm/contacts", headers={**PREFLIGHT, "Origin": "https://evil.example"}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_wrong_order_refuses_the_preflight(wrong: Setup) -> None:
    response = wrong.client.options("/crm/contacts", headers=PREFLIGHT)
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_credentials"
    # Nothing in the refusal looks like a CORS grant: the browser reports a CORS failure.
    assert not [name for name in response.headers if name.startswith("access-control-")]
    assert response.headers["cache-control"] == "no-store"
    # The real request still works for clients that skip preflights (servers, curl).
    assert wrong.client.post("/crm/contacts", headers=wrong.auth()).status_code == 200
