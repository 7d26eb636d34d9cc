"""An app factory for the two-instance test: one process per instance, shared PostgreSQL + Redis.

    python -m uvicorn --factory tests.e2e.multi_instance_app:create_app --port 8001

Configured by ``AG_E2E_DSN``, ``AG_E2E_SCHEMA``, ``AG_E2E_REDIS``, ``AG_E2E_PREFIX`` and
``AG_E2E_INSTANCE``. DPoP proofs name the shared public origin ``http://gateway.test``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware, OAuthApp
from agentguard.dpop import DPoPPolicy
from agentguard.storage import PostgresStore, RedisReplayCache

ORIGIN = "http://gateway.test"


def create_app() -> AgentGuardMiddleware:
    store = PostgresStore(os.environ["AG_E2E_DSN"], schema=os.environ["AG_E2E_SCHEMA"])
    replay = RedisReplayCache(os.environ["AG_E2E_REDIS"], prefix=os.environ["AG_E2E_PREFIX"])
    instance = os.environ["AG_E2E_INSTANCE"]
    guard = Guard(
        store,
        rules=[RouteRule("/crm", service="crm")],
        dpop=DPoPPolicy(public_origin=ORIGIN),
        replay_cache=replay,
        instance=instance,
    )

    async def contacts(request: Request) -> JSONResponse:
        principal = request.state.agentguard_principal
        return JSONResponse({"instance": instance, "user": principal.user_id})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await store.initialize()
        yield
        await store.close()
        await replay.close()

    app = Starlette(
        routes=[Route("/crm/contacts", contacts), Mount("/oauth", app=OAuthApp(guard))],
        lifespan=lifespan,
    )
    return AgentGuardMiddleware(app, guard, public_paths=["/oauth"])
