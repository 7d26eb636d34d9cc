"""The agentguard pytest plugin: ready fixtures for your own tests.

Heavy imports (starlette, httpx) happen inside the fixtures that need them, so installing
agentguard adds nothing to a test run that does not use them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest

from agentguard.guard import Guard
from agentguard.model import Grants, IssuedKeys, User
from agentguard.permissions import RouteRule
from agentguard.storage.memory import MemoryStore
from agentguard.testing.factories import issue_keys, make_user
from agentguard.testing.fakes import FakeClock

if TYPE_CHECKING:
    import httpx

    from agentguard.asgi.types import ASGIApp

T = TypeVar("T")


def _run(function: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(function)


@pytest.fixture
def agentguard_clock() -> FakeClock:
    """A fake clock shared by the store and the guard; call ``advance()`` to move time."""
    return FakeClock()


@pytest.fixture
def agentguard_store(agentguard_clock: FakeClock) -> MemoryStore:
    """A fresh in-memory store on the fake clock."""
    return MemoryStore(clock=agentguard_clock)


@pytest.fixture
def agentguard_grants() -> Grants:
    """The grants of ``agentguard_user`` (default ``crm:read``); override to change them."""
    return Grants.from_scope("crm:read")


@pytest.fixture
def agentguard_user(agentguard_store: MemoryStore, agentguard_grants: Grants) -> User:
    """``user-1`` in account ``acct-1``, member of workspace ``ws-1``, with the grants above."""
    return _run(lambda: make_user(agentguard_store, grants=agentguard_grants))


@pytest.fixture
def agentguard_rules() -> list[RouteRule]:
    """Permission rules of the guard: ``/crm`` needs the ``crm`` service; override freely."""
    return [RouteRule("/crm", service="crm")]


@pytest.fixture
def agentguard_guard(
    agentguard_store: MemoryStore, agentguard_clock: FakeClock, agentguard_rules: list[RouteRule]
) -> Guard:
    """A Guard over the store, clock and rules above."""
    return Guard(agentguard_store, rules=agentguard_rules, clock=agentguard_clock)


@pytest.fixture
def agentguard_keys(agentguard_guard: Guard, agentguard_user: User) -> IssuedKeys:
    """A fresh access/refresh pair for ``agentguard_user``."""
    return _run(lambda: issue_keys(agentguard_guard.issuer, agentguard_user))


@pytest.fixture
def agentguard_app(agentguard_guard: Guard) -> ASGIApp:
    """A guarded Starlette app: ``/crm/{path}`` echoes the principal, ``/oauth`` is public."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from agentguard.asgi import AgentGuardMiddleware, principal_from_scope

    async def echo(request: Request) -> JSONResponse:
        principal = principal_from_scope(request.scope)
        return JSONResponse(
            {
                "user": principal.user_id,
                "key_id": principal.key_id,
                "grants": principal.grants.to_dict(),
                "method": request.method,
                "path": request.url.path,
            }
        )

    app = Starlette(
        routes=[
            Route("/crm/{path:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Mount("/oauth", app=agentguard_guard.oauth_app()),
        ]
    )
    return AgentGuardMiddleware(app, agentguard_guard, public_paths=["/oauth"])


@pytest.fixture
def agentguard_client(agentguard_app: ASGIApp) -> Iterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` wired to ``agentguard_app`` in-process (no network)."""
    import httpx

    transport = httpx.ASGITransport(app=agentguard_app)
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    yield client
    _run(client.aclose)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "agentguard: tests that use the agentguard fixtures (informational)"
    )
