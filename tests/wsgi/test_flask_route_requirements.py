"""Behind AgentGuardWSGIMiddleware, a Flask view's own ``@require`` is enough: no RouteRule."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from agentguard import Guard, IssuedKeys, Level, Requirement, RouteRule
from agentguard.integrations.flask import AgentGuard
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware, default_portal

GRANTS = {"reporter": "reports:read", "nobody": "crm:read", "admin": "admin:write"}


def build(
    source: Callable[[Flask, AgentGuard], object] | None = None,
) -> tuple[Flask, dict[str, IssuedKeys], MemoryStore]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/admin", service="admin", methods={"GET": "write"})])
    app = Flask("reports")
    agentguard = AgentGuard(app, guard)

    @app.get("/reports/<int:year>")
    @agentguard.require("reports")
    def report(year: int) -> dict[str, int]:
        return {"year": year}

    @app.get("/open")
    def unguarded() -> str:
        return "no agentguard decorator here"

    @app.get("/admin/panel")
    @agentguard.require()
    def panel() -> str:
        return "panel"

    requirements = agentguard.route_requirements(app) if source is None else source(app, agentguard)
    app.wsgi_app = AgentGuardWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        guard,
        requirements=requirements,  # type: ignore[arg-type]
    )

    async def issue(who: str) -> IssuedKeys:
        user = await make_user(store, user_id=who, grants=GRANTS[who])
        return await guard.issuer.issue(user.id, "ws-1")

    return app, {who: default_portal().call(issue, who) for who in GRANTS}, store


def auth(keys: IssuedKeys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.access_key.reveal()}"}


def test_a_decorated_view_needs_no_rule() -> None:
    app, keys, _ = build()
    client = app.test_client()
    allowed = client.get("/reports/2026", headers=auth(keys["reporter"]))
    assert (allowed.status_code, allowed.json) == (200, {"year": 2026})
    refused = client.get("/reports/2026", headers=auth(keys["nobody"]))
    assert refused.status_code == 403
    assert refused.json is not None and refused.json["scope"] == "reports:read"


@pytest.mark.parametrize("path", ["/open", "/nowhere", "/reports/not-a-year"])
def test_paths_without_a_decorated_view_stay_refused(path: str) -> None:
    app, keys, _ = build()
    response = app.test_client().get(path, headers=auth(keys["reporter"]))
    assert response.status_code == 403
    assert response.json is not None and response.json["reason"] == "no_route_rule"


def test_a_rule_that_covers_the_path_keeps_deciding() -> None:
    # @require() alone would let any key in; the /admin rule asks admin:write and wins.
    app, keys, _ = build()
    client = app.test_client()
    assert client.get("/admin/panel", headers=auth(keys["reporter"])).status_code == 403
    assert client.get("/admin/panel", headers=auth(keys["admin"])).status_code == 200


@pytest.mark.parametrize(
    "answer",
    [lambda environ: 1 / 0, lambda environ: "reports:read"],
    ids=["raises", "not-a-requirement"],
)
def test_a_broken_source_refuses_and_is_audited(answer: Callable[[object], object]) -> None:
    app, keys, store = build(lambda app, agentguard: answer)
    response = app.test_client().get("/reports/2026", headers=auth(keys["reporter"]))
    assert response.status_code == 503
    assert response.json is not None and response.json["reason"] == "internal_error"
    events = [entry.event() for entry in default_portal().call(store.read)]
    assert any(e.get("reason") == "internal_error" and e["decision"] == "deny" for e in events)


def test_the_source_answers_the_strictest_stacked_requirement() -> None:
    app = Flask("stacked")
    agentguard = AgentGuard(app, Guard(MemoryStore()))

    @app.get("/both")
    @agentguard.require("crm", "read")
    @agentguard.require("crm", "write")
    def both() -> str:
        return "both"

    source = agentguard.route_requirements(app)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/both",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    assert source(environ) == Requirement("crm", Level.WRITE)
