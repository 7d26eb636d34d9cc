"""The Flask view decorator, with and without AgentGuardWSGIMiddleware, through Flask's client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from agentguard import Guard, IssuedKeys, RouteRule, current_principal
from agentguard.errors import ConfigurationError
from agentguard.integrations.flask import EXTENSION_KEY, AgentGuard
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware, default_portal, principal_from_environ

GRANTS = {"reader": "crm:read", "writer": "crm:write reports:read"}


@dataclass
class Setup:
    store: MemoryStore
    guard: Guard
    keys: dict[str, IssuedKeys]

    def headers(self, who: str | None) -> dict[str, str]:
        if who is None:
            return {}
        return {"Authorization": f"Bearer {self.keys[who].access_key.reveal()}"}

    def decisions(self) -> list[dict[str, Any]]:
        events = [entry.event() for entry in default_portal().call(self.store.read)]
        return [event for event in events if event["action"] == "guard.decision"]


@pytest.fixture
def setup() -> Setup:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")], clock=clock)

    async def issue(who: str) -> IssuedKeys:
        user = await make_user(store, user_id=who, grants=GRANTS[who])
        return await guard.issuer.issue(user.id, "ws-1")

    return Setup(store, guard, {who: default_portal().call(issue, who) for who in GRANTS})


def build(guard: Guard, *, middleware: bool) -> Flask:
    app = Flask("decorated")
    agentguard = AgentGuard(app, guard)

    @app.post("/crm/contacts")
    @agentguard.require("crm", "write")
    def add_contact() -> dict[str, str]:
        principal = current_principal()
        assert principal_from_environ(request.environ) is principal
        return {"by": principal.user_id}

    @app.get("/reports/summary")
    @agentguard.require("reports")
    def summary() -> dict[str, str]:
        return {"by": current_principal().user_id}

    @app.get("/crm/both")
    @agentguard.require("crm", "read")
    @agentguard.require("reports", "read")
    def both() -> dict[str, str]:
        return {"by": current_principal().user_id}

    @app.get("/whoami")
    @agentguard.require()
    def whoami() -> dict[str, str]:
        return {"by": current_principal().user_id}

    if middleware:
        app.wsgi_app = AgentGuardWSGIMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, guard, public_paths=["/reports", "/whoami"]
        )
    return app


@pytest.fixture(params=[False, True], ids=["decorator-alone", "behind-middleware"])
def client(setup: Setup, request: pytest.FixtureRequest) -> Iterator[FlaskClient]:
    with build(setup.guard, middleware=request.param).test_client() as client:
        yield client


def call(
    client: FlaskClient, setup: Setup, method: str, path: str, who: str | None
) -> TestResponse:
    return client.open(path, method=method, headers=setup.headers(who))


def test_allowed_with_the_grant(client: FlaskClient, setup: Setup) -> None:
    response = call(client, setup, "POST", "/crm/contacts", "writer")
    assert (response.status_code, response.json) == (200, {"by": "writer"})
    assert call(client, setup, "GET", "/reports/summary", "writer").json == {"by": "writer"}
    assert call(client, setup, "GET", "/whoami", "reader").json == {"by": "reader"}


def test_refused_without_the_grant_and_audited(client: FlaskClient, setup: Setup) -> None:
    before = len(setup.decisions())
    response = call(client, setup, "POST", "/crm/contacts", "reader")
    assert response.status_code == 403
    assert response.json == {
        "error": "insufficient_scope",
        "error_description": "this request needs crm:write",
        "reason": "insufficient_scope",
        "scope": "crm:write",
    }
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert 'scope="crm:write"' in response.headers["WWW-Authenticate"]
    events = setup.decisions()[before:]
    denied = [e for e in events if e["decision"] == "deny"]
    assert [(e["service"], e["reason"], e["actor"]["user"]) for e in denied] == [
        ("crm", "insufficient_scope", "reader")
    ]


def test_missing_key_is_401(client: FlaskClient, setup: Setup) -> None:
    response = call(client, setup, "GET", "/reports/summary", None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="agentguard"'
    assert response.json is not None and response.json["reason"] == "missing_credentials"


def test_stacked_decorators_all_apply(client: FlaskClient, setup: Setup) -> None:
    assert call(client, setup, "GET", "/crm/both", "writer").json == {"by": "writer"}
    refused = call(client, setup, "GET", "/crm/both", "reader")
    assert refused.status_code == 403
    assert refused.json is not None and refused.json["scope"] == "reports:read"


def test_one_decision_per_allowed_request(client: FlaskClient, setup: Setup) -> None:
    before = len(setup.decisions())
    assert call(client, setup, "GET", "/crm/both", "writer").status_code == 200
    events = setup.decisions()[before:]
    assert [(e["decision"], e["actor"]["user"]) for e in events] == [("allow", "writer")]


def test_behind_the_middleware_the_extra_scope_is_checked_once(setup: Setup) -> None:
    """The middleware's rule lets a crm:read key GET /crm/both; the decorator adds reports."""
    app = build(setup.guard, middleware=True)
    before = len(setup.decisions())
    with app.test_client() as client:
        response = call(client, setup, "GET", "/crm/both", "reader")
    assert response.status_code == 403
    events = setup.decisions()[before:]
    assert [(e["decision"], e["service"]) for e in events] == [
        ("allow", "crm"),  # the middleware's rule: crm:read for a GET
        ("deny", "reports"),  # the decorator's extra requirement
    ]


def test_refusals_render_exactly_as_the_middleware(setup: Setup) -> None:
    headers = setup.headers("reader")
    with build(setup.guard, middleware=False).test_client() as alone:
        by_decorator = alone.post("/crm/contacts", headers=headers)
    with build(setup.guard, middleware=True).test_client() as guarded:
        by_middleware = guarded.post("/crm/contacts", headers=headers)
    assert by_middleware.status_code == by_decorator.status_code == 403
    assert by_middleware.data == by_decorator.data
    for name in ("Content-Type", "Cache-Control", "Content-Length"):
        assert by_middleware.headers[name] == by_decorator.headers[name]
    assert by_middleware.headers.getlist("WWW-Authenticate") == by_decorator.headers.getlist(
        "WWW-Authenticate"
    )


def test_init_app_for_an_app_factory(setup: Setup) -> None:
    agentguard = AgentGuard()
    app = Flask("factory")

    @app.get("/x")
    @agentguard.require()
    def x() -> str:
        return current_principal().user_id

    agentguard.init_app(app, setup.guard)
    assert app.extensions[EXTENSION_KEY] is setup.guard
    assert app.test_client().get("/x", headers=setup.headers("reader")).text == "reader"
    assert repr(agentguard) == "AgentGuard(guard=None)"


def test_no_guard_is_a_configuration_error(setup: Setup) -> None:
    with pytest.raises(ConfigurationError, match="needs a guard"):
        AgentGuard(Flask("none"))
    agentguard = AgentGuard()
    app = Flask("uninitialised")

    @app.get("/x")
    @agentguard.require()
    def x() -> str:
        return "never"

    app.testing = True
    with pytest.raises(ConfigurationError, match=r"init_app\(app, guard\)"):
        app.test_client().get("/x", headers=setup.headers("reader"))
