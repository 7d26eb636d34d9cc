"""Issue 20, second attack: a per-key-family rate limit against OAuth JWT access tokens.

Fails on f4c042c. The JWKS is served over a real socket (the resolvers' own fixture), the
guarded app over uvicorn.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.limits import RateLimit
from agentguard.resolvers import JWTAccessTokenResolver
from agentguard.storage import MemoryStore
from agentguard.testing import make_user
from tests.resolvers.conftest import AUDIENCE, ISSUER, Issuer, issuer  # noqa: F401 - fixture
from tests.support.servers import LoopbackServer


def test_a_fresh_jwt_is_not_a_fresh_rate_limit_bucket(issuer: Issuer) -> None:  # noqa: F811
    """``RateLimit(per=KEY_FAMILY)`` (the default scope) is documented as per agent session:
    "refreshing keeps the family". A JWT access token's family is its own token id
    (``jwt:<sha256(jti)>``), so every token the agent gets from its authorization server (a
    refresh, a client-credentials grant: each has a new ``jti``) starts with a full bucket. Two
    calls an hour are allowed; an agent that fetches a new token per call makes ten."""
    import asyncio

    store = MemoryStore(clock=issuer.clock)
    asyncio.run(make_user(store, grants="crm:write"))
    resolver = JWTAccessTokenResolver(
        issuer=ISSUER, audience=AUDIENCE, jwks_url=issuer.jwks_url, directory=store,
        clock=issuer.clock, algorithms=("RS256",),
    )  # fmt: skip
    guard = Guard(
        store,
        rules=[RouteRule("/crm", "crm")],
        clock=issuer.clock,
        token_resolvers=[resolver],
        rate_limits=[RateLimit("per-session", rate=2, period=timedelta(hours=1), burst=2)],
    )
    ran: list[str] = []

    async def contacts(request: Request) -> JSONResponse:
        ran.append("ran")
        return JSONResponse({"contacts": []})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await resolver.aclose()  # its JWKS client lives in the server's loop

    app = Starlette(routes=[Route("/crm/contacts", contacts)], lifespan=lifespan)
    with LoopbackServer(AgentGuardMiddleware(app, guard), lifespan="on") as server:
        statuses = []
        for n in range(10):
            token = issuer.token(jti=f"refresh-{n}")  # what a refresh at the IdP returns
            response = httpx.get(
                server.url + "/crm/contacts", headers={"Authorization": f"Bearer {token}"}
            )
            statuses.append(response.status_code)
    assert len(ran) <= 2, f"{len(ran)} calls ran under a limit of 2 per session: {statuses}"
