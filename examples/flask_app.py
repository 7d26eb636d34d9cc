"""A Flask app guarded by agentguard through the WSGI middleware.

    flask --app examples.flask_app run --with-threads

Agents read contacts with ``crm:read`` and add them with ``crm:write``; ``/healthz`` is public.
The guard decides every request on one background event loop shared by all server threads.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from agentguard import Guard, IssuedKeys, MemoryStore, RouteRule, current_principal
from agentguard.testing import make_user
from agentguard.wsgi import AgentGuardWSGIMiddleware, default_portal, principal_from_environ

CONTACTS: dict[str, list[str]] = {}

store = MemoryStore()
guard = Guard(store, rules=[RouteRule("/crm", service="crm")])

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


app.wsgi_app = AgentGuardWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, guard, public_paths=["/healthz"]
)


def issue_demo_keys(user_id: str = "alice", scope: str = "crm:read") -> IssuedKeys:
    """A user with ``scope`` and a key pair, made on the guard's own event loop."""

    async def issue() -> IssuedKeys:
        user = await make_user(store, user_id=user_id, grants=scope)
        return await guard.issuer.issue(user.id, "ws-1")

    return default_portal().call(issue)
