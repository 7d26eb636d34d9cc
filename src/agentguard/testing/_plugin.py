"""The agentguard pytest plugin: ready fixtures for your own tests.

pytest loads this module in every run of a project that has agentguard installed, so it imports
only pytest and the standard library; each fixture imports what it needs when a test uses it.

Every fixture is synchronous and works under any async test runner (anyio's plugin on asyncio or
trio, pytest-asyncio), with or without async fixtures beside it and whether or not ``sniffio`` is
installed: the few that must await (seeding the store, closing the client) run their coroutine
on an event loop of their own in a worker thread, never on the test's loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import httpx

    from agentguard._guard import Guard
    from agentguard._model import Grants, IssuedKeys, User
    from agentguard._permissions import RouteRule
    from agentguard.asgi._types import ASGIApp
    from agentguard.dpop import DPoPPolicy
    from agentguard.storage._memory import MemoryStore
    from agentguard.testing._dpop_keys import ClockedDPoPKey
    from agentguard.testing._fakes import FakeClock

T = TypeVar("T")


def _run(function: Callable[[], Awaitable[T]]) -> T:
    """Run ``function`` to completion on a fresh event loop in a worker thread.

    Calling ``anyio.run`` on the test's own thread fails once an async fixture has put a loop
    there (``Already running asyncio in this thread``); a worker thread never has one, and
    starts with an empty context, so ``sniffio`` sees no library either.
    """
    import anyio

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentguard-fixture") as pool:
        return pool.submit(anyio.run, function).result()


@pytest.fixture
def agentguard_clock() -> FakeClock:
    """A fake clock shared by the store and the guard; call ``advance()`` to move time."""
    from agentguard.testing._fakes import FakeClock

    return FakeClock()


@pytest.fixture
def agentguard_store(agentguard_clock: FakeClock) -> MemoryStore:
    """A fresh in-memory store on the fake clock."""
    from agentguard.storage._memory import MemoryStore

    return MemoryStore(clock=agentguard_clock)


@pytest.fixture
def agentguard_grants() -> Grants:
    """The grants of ``agentguard_user`` (default ``crm:read``); override to change them."""
    from agentguard._model import Grants

    return Grants.from_scope("crm:read")


@pytest.fixture
def agentguard_user(agentguard_store: MemoryStore, agentguard_grants: Grants) -> User:
    """``user-1`` in account ``acct-1``, member of workspace ``ws-1``, with the grants above."""
    from agentguard.testing._factories import make_user

    return _run(lambda: make_user(agentguard_store, grants=agentguard_grants))


@pytest.fixture
def agentguard_rules() -> list[RouteRule]:
    """Permission rules of the guard: ``/crm`` needs the ``crm`` service; override freely."""
    from agentguard._permissions import RouteRule

    return [RouteRule("/crm", service="crm")]


@pytest.fixture
def agentguard_dpop_policy() -> DPoPPolicy | None:
    """The guard's DPoP policy: proofs checked for ``http://testserver`` (``agentguard_client``'s
    origin), not required, so bearer keys work too. Override it (``None`` turns DPoP off)."""
    from agentguard.dpop import DPoPPolicy

    return DPoPPolicy(public_origin="http://testserver")


@pytest.fixture
def agentguard_guard(
    agentguard_store: MemoryStore,
    agentguard_clock: FakeClock,
    agentguard_rules: list[RouteRule],
    agentguard_dpop_policy: DPoPPolicy | None,
) -> Guard:
    """A Guard over the store, clock, rules and DPoP policy above."""
    from agentguard._guard import Guard

    return Guard(
        agentguard_store,
        rules=agentguard_rules,
        clock=agentguard_clock,
        dpop=agentguard_dpop_policy,
    )


@pytest.fixture
def agentguard_keys(agentguard_guard: Guard, agentguard_user: User) -> IssuedKeys:
    """A fresh access/refresh pair for ``agentguard_user`` (bearer keys, not DPoP-bound)."""
    from agentguard.testing._factories import issue_keys

    return _run(lambda: issue_keys(agentguard_guard.issuer, agentguard_user))


@pytest.fixture
def agentguard_dpop_key(agentguard_clock: FakeClock) -> ClockedDPoPKey:
    """A new ES256 DPoP key whose proofs are dated by ``agentguard_clock``.

    Bind keys to it with ``guard.issuer.issue(user.id, "ws-1", jkt=agentguard_dpop_key.thumbprint)``
    and sign each request with ``agentguard_dpop_key.proof(method, url, access_key=...)``: the
    proof's ``iat`` follows the fake clock, so it stays inside the guard's window after
    ``advance()``.
    """
    from agentguard.testing._dpop_keys import ClockedDPoPKey

    return ClockedDPoPKey.on_clock(agentguard_clock)


@pytest.fixture
def agentguard_app(agentguard_guard: Guard) -> ASGIApp:
    """A guarded Starlette app: ``/crm/{path}`` echoes the principal, ``/oauth`` is public."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from agentguard.asgi import AgentGuardMiddleware, OAuthApp, principal_from_scope

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
            Mount("/oauth", app=OAuthApp(agentguard_guard)),
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
