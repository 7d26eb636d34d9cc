"""Issue 20, second attack: ways an approved call runs as another call, in the app adapters.

Each failed on the code as of f4c042c (an independent attacker's findings, now fixed). Real
sockets (uvicorn, Werkzeug's server) wherever
a server is involved; the websocket test drives the ASGI app in-process because no websocket
library is installed for uvicorn here.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Host, Route, Router, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from agentguard import RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.wsgi import AgentGuardWSGIMiddleware
from tests.gates.attack2.support import decide, shown, world, wsgi_server
from tests.support.servers import LoopbackServer

DELETE_HELD = [RouteRule("/crm", "crm", approval={"DELETE"})]


def _held(response: httpx.Response) -> str:
    assert response.status_code == 403, (response.status_code, response.text)
    assert response.json()["error"] == "approval_required", response.text
    approval_id: str = response.json()["approval_id"]
    return approval_id


# --- 1. a query field or header whose value is the presented key is not bound -------------


def _crm_app(ran: list[dict[str, Any]]) -> Starlette:
    async def delete_contact(request: Request) -> JSONResponse:
        ran.append({"query": dict(request.query_params), "headers": dict(request.headers)})
        hard = bool(request.query_params.get("hard")) or "x-hard-delete" in request.headers
        return JSONResponse({"deleted": request.path_params["cid"], "hard": hard})

    return Starlette(routes=[Route("/crm/contacts/{cid}", delete_contact, methods=["DELETE"])])


def test_query_field_holding_the_key_is_bound_behind_the_asgi_middleware() -> None:
    """The operator approves ``DELETE /crm/contacts/7``. The retry adds ``?hard=<own key>``:
    :func:`bound_target` drops every query field whose value is the presented key (meant for a
    vendor-native ``?api_key=`` placement, which the middleware does not have), so the binding
    is unchanged and the app runs a *hard* delete the operator never saw. Behind the
    middleware the key comes from ``Authorization``; any other field is part of the call."""
    w = world(DELETE_HELD)
    ran: list[dict[str, Any]] = []
    with LoopbackServer(AgentGuardMiddleware(_crm_app(ran), w.guard)) as server:
        approval_id = _held(httpx.delete(server.url + "/crm/contacts/7", headers=w.alice.auth()))
        decide(w, approval_id)
        retry = httpx.delete(
            server.url + f"/crm/contacts/7?hard={w.alice.key}", headers=w.alice.auth(approval_id)
        )
    assert not any("hard" in call["query"] for call in ran), "an unapproved hard=… ran"
    assert retry.status_code == 403 and retry.json()["reason"] == "approval_mismatch", retry.text


def test_header_holding_the_key_is_bound_behind_the_asgi_middleware() -> None:
    """The same with a header: ``X-Hard-Delete: <own key>`` is left out of the bound headers
    (and of what the operator is shown) because its value is the presented key, yet the app
    reads it. Only the credential-placement header may be left out, and the middleware has
    none besides ``Authorization``."""
    w = world(DELETE_HELD)
    ran: list[dict[str, Any]] = []
    with LoopbackServer(AgentGuardMiddleware(_crm_app(ran), w.guard)) as server:
        approval_id = _held(httpx.delete(server.url + "/crm/contacts/7", headers=w.alice.auth()))
        decide(w, approval_id)
        retry = httpx.delete(
            server.url + "/crm/contacts/7",
            headers={**w.alice.auth(approval_id), "X-Hard-Delete": w.alice.key},
        )
    assert not any("x-hard-delete" in call["headers"] for call in ran), "an unshown header ran"
    assert retry.status_code == 403 and retry.json()["reason"] == "approval_mismatch", retry.text


def test_query_field_holding_the_key_is_bound_behind_the_flask_wsgi_middleware() -> None:
    """Flask behind ``AgentGuardWSGIMiddleware`` on Werkzeug's server: the same unbound
    ``?hard=<key>`` reaches the view, which reads it as truthy."""
    w = world(DELETE_HELD)
    ran: list[dict[str, Any]] = []
    flask_app = Flask("attack2")

    @flask_app.delete("/crm/contacts/<cid>")
    def delete_contact(cid: str) -> dict[str, Any]:
        ran.append(dict(request.args))
        return {"deleted": cid, "hard": bool(request.args.get("hard"))}

    flask_app.wsgi_app = AgentGuardWSGIMiddleware(flask_app.wsgi_app, w.guard)  # type: ignore[method-assign]
    with wsgi_server(flask_app) as url:
        approval_id = _held(httpx.delete(url + "/crm/contacts/7", headers=w.alice.auth()))
        decide(w, approval_id)
        retry = httpx.delete(
            url + f"/crm/contacts/7?hard={w.alice.key}", headers=w.alice.auth(approval_id)
        )
    assert not any("hard" in args for args in ran), "Flask ran an unapproved hard delete"
    assert retry.status_code == 403, retry.text


# --- 2. a websocket handshake and an HTTP GET bind the same -------------------------------


def test_http_get_approval_does_not_open_a_websocket() -> None:
    """``/crm/feed`` is a harmless HTTP GET and, on the same path, a websocket that takes
    commands; the rule holds GETs (every websocket handshake is a GET). The agent asks for
    the HTTP GET; the operator approves "GET /crm/feed". The approval binds neither the scope
    type nor ``Upgrade``/``Sec-WebSocket-*`` (all volatile), so the agent opens the *websocket*
    with it and sends whatever it likes. An approval given to an HTTP call must not open a
    websocket (nor the reverse)."""
    w, ran = world([RouteRule("/crm", "crm", approval={"GET"})]), []

    async def feed(request: Request) -> JSONResponse:
        ran.append("http")
        return JSONResponse({"feed": []})

    async def console(socket: WebSocket) -> None:
        await socket.accept()
        ran.append("websocket:" + await socket.receive_text())
        await socket.send_text("done")
        await socket.close()

    app = Starlette(routes=[Route("/crm/feed", feed), WebSocketRoute("/crm/feed", console)])
    with TestClient(AgentGuardMiddleware(app, w.guard)) as client:
        held = client.get("/crm/feed", headers=w.alice.auth())
        assert held.status_code == 403 and held.json()["error"] == "approval_required"
        approval_id = held.json()["approval_id"]
        assert client.portal is not None
        client.portal.call(_approve_on, w, approval_id)
        refused = (WebSocketDisconnect, WebSocketDenialResponse)
        with pytest.raises(refused):  # the handshake itself is refused
            client.websocket_connect("/crm/feed", headers=w.alice.auth(approval_id)).__enter__()
    assert not any(entry.startswith("websocket") for entry in ran), ran


async def _approve_on(w: Any, approval_id: str) -> None:
    from tests.gates.support import approve

    await approve(w.guard, approval_id)


# --- 3. HEAD runs the GET handler, without GET's approval or cost --------------------------


def test_head_does_not_skip_the_approval_held_on_get_asgi() -> None:
    """The rule holds ``GET /crm/export`` (a bulk export that mails every contact out).
    Starlette (and FastAPI, Flask, Django, Rails...) serve HEAD with the GET handler, body
    dropped: its side effects all happen. ``approval={"GET"}`` does not hold HEAD, so the
    handler runs with no approval at all."""
    w, ran = world([RouteRule("/crm", "crm", approval={"GET"}, cost={"GET": 5})]), []

    async def export(request: Request) -> JSONResponse:
        ran.append(request.method)
        return JSONResponse({"mailed": 1000})

    app = Starlette(routes=[Route("/crm/export", export, methods=["GET"])])
    with LoopbackServer(AgentGuardMiddleware(app, w.guard)) as server:
        response = httpx.head(server.url + "/crm/export", headers=w.alice.auth())
    assert ran == [], (
        f"the GET handler ran for {ran} with no approval (HEAD → {response.status_code})"
    )


def test_head_does_not_skip_the_approval_held_on_get_flask() -> None:
    """The same with Flask behind the WSGI middleware: Flask adds HEAD to every GET view."""
    w, ran = world([RouteRule("/crm", "crm", approval={"GET"})]), []
    flask_app = Flask("attack2-head")

    @flask_app.get("/crm/export")
    def export() -> dict[str, int]:
        ran.append(request.method)
        return {"mailed": 1000}

    flask_app.wsgi_app = AgentGuardWSGIMiddleware(flask_app.wsgi_app, w.guard)  # type: ignore[method-assign]
    with wsgi_server(flask_app) as url:
        response = httpx.head(url + "/crm/export", headers=w.alice.auth())
    assert ran == [], f"the GET view ran for {ran} with no approval (HEAD → {response.status_code})"


# --- 4. WSGI: the mount point (SCRIPT_NAME) is shown but not bound ------------------------


def test_wsgi_approval_is_bound_to_the_mount_point_it_was_shown_with() -> None:
    """One guard fronts two mounted WSGI apps (Werkzeug's ``DispatcherMiddleware``:
    ``/sandbox`` and ``/prod``). The operator is shown ``DELETE /sandbox/crm/contacts/7`` (the
    record's path is the raw URI) and approves it; the binding holds only the target below
    ``SCRIPT_NAME`` (``/crm/contacts/7``), so the agent spends the approval on
    ``/prod/crm/contacts/7``: a call on another path than the one approved."""
    w = world(DELETE_HELD)
    ran: list[str] = []

    def mounted(name: str) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            ran.append(name + environ["PATH_INFO"])
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"deleted": true}']

        return AgentGuardWSGIMiddleware(app, w.guard)

    root = DispatcherMiddleware(
        mounted("root"), {"/sandbox": mounted("sandbox"), "/prod": mounted("prod")}
    )
    with wsgi_server(root) as url:
        approval_id = _held(httpx.delete(url + "/sandbox/crm/contacts/7", headers=w.alice.auth()))
        assert shown(w, approval_id).path == "/sandbox/crm/contacts/7"
        decide(w, approval_id)
        retry = httpx.delete(url + "/prod/crm/contacts/7", headers=w.alice.auth(approval_id))
    assert "prod/crm/contacts/7" not in ran, (
        f"approved /sandbox/crm/contacts/7, ran {ran} (retry {retry.status_code})"
    )


# --- 5. Host is "volatile", but an ASGI/WSGI app routes on it -----------------------------


def test_approval_is_bound_to_the_host_a_host_routed_app_serves() -> None:
    """Behind the middleware, ``Host`` picks the app (Starlette ``Host`` routes, Flask
    ``host_matching``/subdomains, one tenant per subdomain). The approval drops ``Host`` as a
    transport header, so an approval for the sandbox tenant's DELETE deletes in production."""
    w = world(DELETE_HELD)
    ran: list[str] = []

    def tenant(name: str) -> Router:
        async def delete_contact(request: Request) -> JSONResponse:
            ran.append(name)
            return JSONResponse({"deleted": True, "tenant": name})

        return Router(routes=[Route("/crm/contacts/{cid}", delete_contact, methods=["DELETE"])])

    app = Router(
        routes=[Host("sandbox.example", tenant("sandbox")), Host("prod.example", tenant("prod"))]
    )
    with LoopbackServer(AgentGuardMiddleware(app, w.guard)) as server:
        target = server.url + "/crm/contacts/7"
        approval_id = _held(
            httpx.delete(target, headers={**w.alice.auth(), "Host": "sandbox.example"})
        )
        decide(w, approval_id)
        retry = httpx.delete(target, headers={**w.alice.auth(approval_id), "Host": "prod.example"})
    assert "prod" not in ran, f"approved on sandbox, ran on {ran} (retry {retry.status_code})"
