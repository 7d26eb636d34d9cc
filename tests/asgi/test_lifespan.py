"""guard_lifespan through Starlette's TestClient, which runs the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from agentguard import Guard, IssuedKeys, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._lifespan import guard_lifespan
from agentguard.dpop import DPoPPolicy
from agentguard.storage import (
    MemoryStore,
    PostgresStore,
    RedisReplayCache,
    SQLiteStore,
    StorageError,
)
from agentguard.testing import FakeClock, make_user
from tests.backends.services import drop_schema, postgres_dsn, random_name, redis_url

DPOP = DPoPPolicy(public_origin="http://testserver")  # so the guard keeps a replay cache


class Recorded:
    """A store-like resource that logs its lifecycle."""

    def __init__(self, log: list[str], name: str, *, fail: bool = False) -> None:
        self.log = log
        self.name = name
        self.fail = fail

    async def __aenter__(self) -> Recorded:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot open")
        self.log.append(f"open {self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.log.append(f"close {self.name}")

    async def check_and_store(self, key: bytes, expires_at: object) -> bool:
        """A ReplayCache too, so a Guard with DPoP takes it."""
        return True


class Closable:
    """A resource with only ``initialize()``/``close()``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def initialize(self) -> None:
        self.log.append("initialize")

    async def close(self) -> None:
        self.log.append("close")


async def whoami(request: Request) -> JSONResponse:
    principal = request.state.agentguard_principal
    return JSONResponse({"user": principal.user_id, "state": request.state.__dict__.get("tag")})


def guarded_app(guard: Guard, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/crm/me", whoami)], lifespan=guard_lifespan(guard, **options))
    app.add_middleware(AgentGuardMiddleware, guard=guard)
    return app


async def issue(guard: Guard) -> IssuedKeys:
    user = await make_user(guard.store, grants="crm:read")
    return await guard.issuer.issue(user.id, "ws-1")


def test_sqlite_opens_at_startup_and_closes_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "agentguard.db"
    store = SQLiteStore(path, clock=FakeClock())
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")], clock=store.clock)
    with TestClient(guarded_app(guard)) as client:
        assert path.exists()  # opened (schema created) before any request
        keys = client.portal.call(issue, guard)
        auth = {"Authorization": f"Bearer {keys.access_key.reveal()}"}
        assert client.get("/crm/me", headers=auth).json()["user"] == "user-1"
        assert client.get("/crm/me").status_code == 401  # anonymous: counted, not yet written
    with pytest.raises(StorageError):
        anyio.run(store.get_user, "user-1")

    async def actions() -> list[object]:
        async with SQLiteStore(path, read_only=True) as reader:
            return [entry.event()["action"] for entry in await reader.read()]

    # The refusal summary of the open interval was flushed before the store closed.
    assert anyio.run(actions)[-1] == "guard.refusal_summary"


def test_inner_lifespan_runs_inside_with_its_state() -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def mine(app: Starlette) -> AsyncIterator[dict[str, str]]:
        log.append("inner startup")
        yield {"tag": "mine"}
        log.append("inner shutdown")

    async def tag(request: Request) -> JSONResponse:
        return JSONResponse(request.state.tag)

    lifespan = guard_lifespan(Recorded(log, "a"), Closable(log), Recorded(log, "b"), inner=mine)
    app = Starlette(routes=[Route("/tag", tag)], lifespan=lifespan)
    with TestClient(app) as client:
        assert client.get("/tag").json() == "mine"
        assert log == ["open a", "initialize", "open b", "inner startup"]
    assert log[4:] == ["inner shutdown", "close b", "close", "close a"]


def test_a_failure_at_startup_closes_what_opened_and_stops_the_app() -> None:
    log: list[str] = []
    lifespan = guard_lifespan(Recorded(log, "a"), Recorded(log, "b", fail=True))
    app = Starlette(lifespan=lifespan)
    with pytest.raises(RuntimeError, match="b cannot open"), TestClient(app):
        pass  # pragma: no cover - startup fails
    assert log == ["open a", "close a"]


def test_a_guards_stores_are_opened_once_each() -> None:
    log: list[str] = []
    store = MemoryStore()
    cache = Recorded(log, "replay")
    guard = Guard(store, replay_cache=cache, dpop=DPOP)
    assert guard.replay_cache is cache
    with TestClient(Starlette(lifespan=guard_lifespan(guard, cache, store))):
        assert log == ["open replay"]
    assert log == ["open replay", "close replay"]


@pytest.fixture
def pg_location() -> Iterator[tuple[str, str]]:
    dsn = anyio.run(postgres_dsn)
    schema = random_name("agentguard_test")
    yield dsn, schema
    anyio.run(drop_schema, dsn, schema)


def test_postgres_and_redis_on_the_servers_loop(pg_location: tuple[str, str]) -> None:
    dsn, schema = pg_location
    url = anyio.run(redis_url)
    store = PostgresStore(dsn, schema=schema)
    cache = RedisReplayCache(url, prefix=random_name("lifespan") + ":")
    rules = [RouteRule("/crm", service="crm")]
    guard = Guard(store, rules=rules, replay_cache=cache, dpop=DPOP)
    app = FastAPI(lifespan=guard_lifespan(guard))
    app.add_middleware(AgentGuardMiddleware, guard=guard)

    @app.get("/crm/me")
    async def me(request: Request) -> str:
        return str(request.state.agentguard_principal.user_id)

    with TestClient(app) as client:
        keys = client.portal.call(issue, guard)
        auth = {"Authorization": f"Bearer {keys.access_key.reveal()}"}
        assert client.get("/crm/me", headers=auth).json() == "user-1"
    with pytest.raises(StorageError, match=r"closed|another event loop"):
        anyio.run(store.get_user, "user-1")
    with pytest.raises(StorageError, match="closed"):
        anyio.run(cache.check_and_store, b"jti", guard.clock.now())
