"""A guarded Flask app on the process's background loop, with a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask, Response, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue

from agentguard import Guard, IssuedKeys, RouteRule, current_principal
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware, default_portal, principal_from_environ


@dataclass
class WSGISetup:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    keys: IssuedKeys
    app: Flask

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.keys.access_key.reveal()}"}

    def events(self) -> list[dict[str, object]]:
        entries = default_portal().call(self.store.read)
        return [entry.event() for entry in entries]


def build_flask(guard: Guard) -> Flask:
    app = Flask("guarded")

    @app.route("/crm/contacts", methods=["GET", "POST"])
    def contacts() -> ResponseReturnValue:
        principal = principal_from_environ(request.environ)
        assert current_principal() is principal
        return jsonify(user=principal.user_id, method=request.method)

    @app.get("/crm/stream")
    def stream() -> ResponseReturnValue:
        def chunks() -> Iterator[str]:
            for index in range(3):
                yield f"{current_principal().user_id}:{index}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/healthz")
    def health() -> ResponseReturnValue:
        return jsonify(ok=True)

    app.wsgi_app = AgentGuardWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, guard, public_paths=["/healthz"]
    )
    return app


@pytest.fixture
def wsgi_setup() -> WSGISetup:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")], clock=clock)

    async def issue() -> IssuedKeys:
        user = await make_user(store, grants="crm:read")
        return await guard.issuer.issue(user.id, "ws-1")

    keys = default_portal().call(issue)
    return WSGISetup(clock, store, guard, keys, build_flask(guard))
