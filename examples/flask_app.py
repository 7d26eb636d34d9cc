"""A Flask app guarded by agentguard through the WSGI middleware.

    python -m examples.flask_app --print-keys         # prints alice's keys, serves on :8000
    curl -H "Authorization: Bearer <access key>" http://127.0.0.1:8000/crm/contacts
    agentguard users disable alice --store sqlite:///agentguard-examples.db   # then: 401

``flask --app examples.flask_app run --with-threads`` serves the same app without printing keys.
Users and keys live in ``agentguard-examples.db`` (see ``examples/launch.py``). Agents read
contacts with ``crm:read`` and add them with ``crm:write``; ``/healthz`` is public. The guard
decides every request on one background event loop shared by all server threads.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from agentguard import Guard, RouteRule, current_principal
from agentguard.storage import open_store
from agentguard.wsgi import AgentGuardWSGIMiddleware, principal_from_environ
from examples import launch

CONTACTS: dict[str, list[str]] = {}


def create_app(store_url: str) -> Flask:
    """The guarded app, its users and keys in the store at ``store_url``."""
    guard = Guard(open_store(store_url), rules=[RouteRule("/crm", service="crm")])
    app = Flask(__name__)

    @app.get("/crm/contacts")
    def list_contacts() -> ResponseReturnValue:
        principal = principal_from_environ(request.environ)
        return jsonify(contacts=CONTACTS.get(principal.user_id, []))

    @app.post("/crm/contacts")
    def add_contact() -> ResponseReturnValue:
        principal = current_principal()  # the same Principal, from the contextvar
        name = str((request.get_json(silent=True) or {}).get("name", ""))
        CONTACTS.setdefault(principal.user_id, []).append(name)
        return jsonify(added=name), 201

    @app.get("/healthz")
    def health() -> ResponseReturnValue:
        return jsonify(ok=True)

    guarded = AgentGuardWSGIMiddleware(app.wsgi_app, guard, public_paths=["/healthz"])
    app.wsgi_app = guarded  # type: ignore[method-assign]
    launch.close_at_exit(guard, guarded.portal)  # closes the store when the process exits
    return app


app = create_app(launch.store_url())

if __name__ == "__main__":
    args = launch.options(__doc__)
    launch.demo_keys(args, grants="crm:write")
    launch.stop_on_sigterm()  # SIGTERM stops the server like Ctrl-C, so the store is closed
    create_app(args.store).run(host=args.host, port=args.port, threaded=True)
