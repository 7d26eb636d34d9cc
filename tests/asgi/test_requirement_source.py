"""The ``agentguard_requirements`` hook: an app declaring each request's requirement itself.

A plain Starlette app keeps a ``source(scope) -> Requirement | None`` in
``app.state.agentguard_requirements`` (:data:`~agentguard.asgi._middleware.REQUIREMENTS_STATE_KEY`);
the middleware, installed with ``app.add_middleware``, decides with what it returns, and falls
back to the guard's route rules on ``None``. A source that fails must not let the request through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Grants, Guard, Level, Requirement, RouteRule, User
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._middleware import REQUIREMENTS_STATE_KEY
from agentguard.asgi._types import Scope
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio
BILLING_WRITE = Requirement("billing", Level.WRITE)
Source = Callable[[Scope], "Requirement | None"]


def declares_billing(scope: Scope) -> Requirement | None:
    """``/invoices`` declares billing:write; everything else leaves it to the route rules."""
    return BILLING_WRITE if scope["path"].startswith("/invoices") else None


@dataclass
class Site:
    store: MemoryStore
    guard: Guard
    user: User
    key: str
    app: Starlette
    reached: list[str] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def last_decision(self) -> dict[str, object]:
        events = [e.event() for e in await self.store.read()]
        return [e for e in events if e["action"] == "guard.decision"][-1]

    async def set_grants(self, scope: str) -> None:
        grants = Grants.from_scope(scope)
        await self.store.put_user(self.user.model_copy(update={"grants": grants}))


@pytest.fixture
async def site() -> Site:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/", service="crm")], clock=clock)
    user = await make_user(store, grants="crm:write billing:read")
    key = (await guard.issuer.issue(user.id, "ws-1")).access_key.reveal()
    reached: list[str] = []

    async def anything(request: Request) -> JSONResponse:
        reached.append(request.url.path)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{rest:path}", anything, methods=["GET", "POST"])])
    app.add_middleware(AgentGuardMiddleware, guard=guard)
    setattr(app.state, REQUIREMENTS_STATE_KEY, declares_billing)
    return Site(store, guard, user, key, app, reached)


async def test_a_declared_requirement_replaces_the_route_rules(site: Site) -> None:
    async with site.client() as client:
        refused = await client.get("/invoices/7", headers={"Authorization": f"Bearer {site.key}"})
        decision = await site.last_decision()
        assert refused.status_code == 403  # crm:write would pass the route rule; billing:read not
        assert refused.json()["scope"] == "billing:write"
        assert (decision["decision"], decision["service"]) == ("deny", "billing")
        assert site.reached == []

        await site.set_grants("billing:write")  # live: the next request sees it
        allowed = await client.get("/invoices/7", headers={"Authorization": f"Bearer {site.key}"})
        decision = await site.last_decision()
    assert allowed.status_code == 200
    assert (decision["decision"], decision["service"]) == ("allow", "billing")
    assert site.reached == ["/invoices/7"]


async def test_none_from_the_source_leaves_the_route_rules_in_charge(site: Site) -> None:
    async with site.client() as client:
        allowed = await client.post("/contacts", headers={"Authorization": f"Bearer {site.key}"})
        assert (await site.last_decision())["service"] == "crm"
        await site.set_grants("crm:read billing:write")
        refused = await client.post("/contacts", headers={"Authorization": f"Bearer {site.key}"})
    assert (allowed.status_code, refused.status_code) == (200, 403)
    assert refused.json()["scope"] == "crm:write"


async def test_a_declared_requirement_on_a_path_no_rule_covers_is_used(site: Site) -> None:
    no_rules = Guard(site.store, clock=site.guard.clock)  # no rule covers anything
    app = Starlette(routes=site.app.routes)
    app.add_middleware(AgentGuardMiddleware, guard=no_rules)
    setattr(app.state, REQUIREMENTS_STATE_KEY, declares_billing)
    await site.set_grants("billing:write")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        declared = await client.get("/invoices/1", headers={"Authorization": f"Bearer {site.key}"})
        uncovered = await client.get("/other", headers={"Authorization": f"Bearer {site.key}"})
    assert declared.status_code == 200
    assert (uncovered.status_code, uncovered.json()["reason"]) == (403, "no_route_rule")


def failing(scope: Scope) -> Requirement | None:
    raise LookupError("the route table is being rebuilt")


def wrong_answer(scope: Scope) -> Requirement | None:
    return "billing:write"  # type: ignore[return-value]


@pytest.mark.parametrize("source", [failing, wrong_answer], ids=["raises", "not-a-requirement"])
async def test_a_broken_source_never_lets_the_request_reach_the_app(
    site: Site, source: Source
) -> None:
    setattr(site.app.state, REQUIREMENTS_STATE_KEY, source)
    async with site.client() as client:
        response = await client.get("/invoices/7", headers={"Authorization": f"Bearer {site.key}"})
    assert response.status_code >= 500
    assert site.reached == []


@pytest.mark.parametrize("source", [failing, wrong_answer], ids=["raises", "not-a-requirement"])
async def test_a_broken_source_is_refused_by_the_guard_and_audited(
    site: Site, source: Source
) -> None:
    setattr(site.app.state, REQUIREMENTS_STATE_KEY, source)
    async with site.client() as client:
        response = await client.get("/invoices/7", headers={"Authorization": f"Bearer {site.key}"})
    assert response.status_code in (500, 503)
    assert "error" in response.json()
    decision = await site.last_decision()
    assert (decision["decision"], decision["path"]) == ("deny", "/invoices/7")
