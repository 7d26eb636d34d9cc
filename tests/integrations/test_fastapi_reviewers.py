"""FastAPI and the guard's reviewers: they run in the middleware, never silently skipped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import Body, FastAPI
from fastapi.testclient import TestClient

from agentguard import Guard, IssuedKeys, Principal
from agentguard.asgi import AgentGuardMiddleware
from agentguard.integrations.fastapi import install, require
from agentguard.review import ReviewContext, Verdict
from agentguard.storage import MemoryStore
from agentguard.testing import make_user


def no_secret_word(context: ReviewContext, content: str) -> Verdict:
    if "s3cr3t" in content:
        return Verdict.block("no-secret-word", "secret_word")
    return Verdict.allow("no-secret-word")


def _app(*, middleware: bool) -> tuple[FastAPI, Guard]:
    store = MemoryStore()
    guard = Guard(store, request_reviewers=[no_secret_word], response_reviewers=[no_secret_word])
    app = FastAPI()
    install(app, guard)

    @app.post("/notes")
    async def add(
        principal: Annotated[Principal, require("notes", "write")],
        text: Annotated[str, Body(embed=True)],
    ) -> dict[str, str]:
        return {"echo": text}

    if middleware:
        app.add_middleware(AgentGuardMiddleware, guard=guard)
    return app, guard


@pytest.fixture(params=[True, False], ids=["middleware", "dependencies-only"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, Guard, IssuedKeys, bool]]:
    app, guard = _app(middleware=request.param)

    async def issue() -> IssuedKeys:
        user = await make_user(guard.store, user_id="u1", grants="notes:write")
        return await guard.issuer.issue(user.id, "ws-1")

    with TestClient(app) as client:
        yield client, guard, client.portal.call(issue), request.param


def _events(client: TestClient, guard: Guard) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        store = guard.store
        assert isinstance(store, MemoryStore)
        return [entry.event() for entry in await store.read()]

    assert client.portal is not None
    return client.portal.call(read)


def test_reviewers_run_or_the_route_is_refused(
    setup: tuple[TestClient, Guard, IssuedKeys, bool],
) -> None:
    client, guard, keys, middleware = setup
    headers = {"Authorization": f"Bearer {keys.access_key.reveal()}"}
    clean = client.post("/notes", json={"text": "hello"}, headers=headers)
    dirty_in = client.post("/notes", json={"text": "my s3cr3t"}, headers=headers)
    if middleware:
        assert clean.status_code == 200, clean.text
        assert clean.json() == {"echo": "hello"}
        assert dirty_in.status_code == 403
        assert dirty_in.json()["error"] == "request_blocked"
    else:  # a dependency cannot review: refused, audited, never run unreviewed
        for response in (clean, dirty_in):
            assert response.status_code == 503
            body = response.json()
            assert body["reason"] == "internal_error"
            assert "AgentGuardMiddleware" in body["error_description"]
        denials = [
            event
            for event in _events(client, guard)
            if event.get("reason") == "internal_error" and event.get("decision") == "deny"
        ]
        assert len(denials) == 2


def test_preflight_outside_cors_says_what_to_do() -> None:
    app, _ = _app(middleware=True)
    with TestClient(app) as client:
        response = client.options(
            "/notes",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
    assert response.status_code == 401
    assert "CORSMiddleware" in response.json()["error_description"]
    assert "access-control-allow-origin" not in response.headers
