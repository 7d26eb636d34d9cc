"""A whole agent session against a guarded app served by uvicorn on a loopback socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware, OAuthApp
from agentguard.audit import verify_chain
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.support.servers import LoopbackServer


class Server(LoopbackServer):
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        self.guard = Guard(self.store, rules=[RouteRule("/crm", service="crm")], clock=self.clock)

        async def contacts(request: Request) -> JSONResponse:
            return JSONResponse({"user": request.state.agentguard_principal.user_id})

        app = Starlette(
            routes=[
                Route("/crm/contacts", contacts, methods=["GET", "POST"]),
                Mount("/oauth", app=OAuthApp(self.guard)),
            ]
        )
        super().__init__(
            AgentGuardMiddleware(app, self.guard, public_paths=["/oauth"]), lifespan="on"
        )

    def __enter__(self) -> Server:
        super().__enter__()
        return self


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


def test_agent_session_over_a_socket(server: Server) -> None:
    import anyio

    user = anyio.run(lambda: make_user(server.store, grants="crm:read"))
    keys = anyio.run(lambda: server.guard.issuer.issue(user.id, "ws-1"))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        bearer = {"Authorization": f"Bearer {keys.access_key.reveal()}"}
        assert http.get("/crm/contacts", headers=bearer).json() == {"user": "user-1"}
        assert http.post("/crm/contacts", headers=bearer).status_code == 403

        # renewal across three access-key lifetimes, ahead of expiry
        refresh_key = keys.refresh_key.reveal()
        for _ in range(3):
            server.clock.advance(50 * 60)
            response = http.post(
                "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_key}
            )
            assert response.status_code == 200
            body = response.json()
            refresh_key = body["refresh_token"]
            bearer = {"Authorization": f"Bearer {body['access_token']}"}
            assert http.get("/crm/contacts", headers=bearer).status_code == 200

        # the operator disables the user: the next call and the next refresh both fail
        anyio.run(lambda: server.store.put_user(user.model_copy(update={"enabled": False})))
        denied = http.get("/crm/contacts", headers=bearer)
        assert denied.status_code == 401
        assert denied.json()["reason"] == "user_disabled"
        assert denied.headers["www-authenticate"].startswith(
            'Bearer realm="agentguard", error="invalid_token"'
        )
        refused = http.post(
            "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_key}
        )
        assert refused.json() == {
            "error": "invalid_grant",
            "error_description": "the user who owns this key is disabled",
            "reason": "user_disabled",
        }

    entries = anyio.run(server.store.read)
    assert verify_chain(entries) is None
    actions = [e.event()["action"] for e in entries]
    assert actions.count("key.refresh") == 4  # three allowed, one denied
    assert actions.count("guard.decision") == 6
