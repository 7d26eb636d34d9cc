"""AgentGuardMiddleware through a real Starlette app and httpx's ASGI transport."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from agentguard import AccountStatus, Grants
from agentguard._context import principal_var
from agentguard.asgi import AgentGuardMiddleware
from tests.asgi.conftest import Setup

pytestmark = pytest.mark.anyio


async def test_allowed_read_reaches_the_route_with_principal(setup: Setup) -> None:
    response = await setup.client.get("/crm/contacts", headers=setup.auth())
    assert response.status_code == 200
    assert response.json() == {"user": "user-1", "method": "GET"}
    events = await setup.events()
    decision = events[-1]
    assert (decision["action"], decision["decision"], decision["service"]) == (
        "guard.decision",
        "allow",
        "crm",
    )
    assert decision["actor"]["key_id"] == setup.keys.access.id  # type: ignore[index]


async def test_write_without_write_grant_is_403(setup: Setup) -> None:
    response = await setup.client.post("/crm/contacts", headers=setup.auth())
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.json()["scope"] == "crm:write"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    last = (await setup.events())[-1]
    assert (last["decision"], last["reason"], last["status"]) == ("deny", "insufficient_scope", 403)


async def test_other_service_without_grant_is_403(setup: Setup) -> None:
    response = await setup.client.get("/projects/list", headers=setup.auth())
    assert response.status_code == 403


async def test_uncovered_path_is_403(setup: Setup) -> None:
    response = await setup.client.get("/nowhere", headers=setup.auth())
    assert response.status_code == 403
    assert response.json()["reason"] == "no_route_rule"


async def test_no_key_is_401_with_bare_challenge(setup: Setup) -> None:
    response = await setup.client.get("/crm/contacts")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="agentguard"'
    assert response.json()["reason"] == "missing_credentials"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ("disable", "user_disabled"),
        ("remove_member", "not_a_member"),
        ("close_account", "account_closed"),
        ("revoke", "revoked"),
        ("expire", "expired"),
    ],
)
async def test_revocation_is_instant(setup: Setup, mutate: str, reason: str) -> None:
    assert (await setup.client.get("/crm/contacts", headers=setup.auth())).status_code == 200
    if mutate == "disable":
        await setup.store.put_user(setup.user.model_copy(update={"enabled": False}))
    elif mutate == "remove_member":
        await setup.store.set_membership("user-1", "ws-1", member=False)
    elif mutate == "close_account":
        account = await setup.store.get_account("acct-1")
        assert account is not None
        await setup.store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
    elif mutate == "revoke":
        await setup.guard.issuer.revoke(key_id=setup.keys.access.id)
    else:
        setup.clock.advance(3600)
    response = await setup.client.get("/crm/contacts", headers=setup.auth())
    assert response.status_code == 401
    body = response.json()
    assert (body["error"], body["reason"]) == ("invalid_token", reason)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert (await setup.events())[-1]["reason"] == reason


async def test_promotion_applies_on_next_call(setup: Setup) -> None:
    assert (await setup.client.post("/crm/contacts", headers=setup.auth())).status_code == 403
    await setup.store.put_user(setup.user.model_copy(update={"grants": Grants({"crm": "write"})}))
    assert (await setup.client.post("/crm/contacts", headers=setup.auth())).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"Authorization": "Bearer ag_at_bogus"}, 401, "malformed_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 400, "unsupported_scheme"),
        ({"Authorization": "Bearer"}, 400, "malformed_request"),
    ],
)
async def test_bad_credentials(
    setup: Setup, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await setup.client.get("/crm/contacts", headers=headers)
    assert response.status_code == status
    assert response.json()["reason"] == reason


async def test_refresh_key_is_not_an_access_key(setup: Setup) -> None:
    response = await setup.client.get(
        "/crm/contacts", headers=setup.auth(setup.keys.refresh_key.reveal())
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "wrong_key_kind"


async def test_two_authorization_headers_are_400(setup: Setup) -> None:
    key = setup.keys.access_key.reveal()
    response = await setup.client.get(
        "/crm/contacts",
        headers=[("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")],
    )
    assert response.status_code == 400


async def test_dot_segments_are_refused(setup: Setup) -> None:
    response = await setup.client.get("/crm/%2E%2E/projects/list", headers=setup.auth())
    assert response.status_code in (400, 404)
    for event in await setup.events():
        assert event["decision"] != "allow" or event["path"] != "/crm/%2E%2E/projects/list"


async def test_public_path_skips_guard(setup: Setup) -> None:
    assert (await setup.client.get("/healthz")).status_code == 200
    assert (await setup.client.get("/healthzz")).status_code == 401


async def test_key_never_in_audit_or_error_body(setup: Setup) -> None:
    await setup.store.put_user(setup.user.model_copy(update={"enabled": False}))
    response = await setup.client.get("/crm/contacts", headers=setup.auth())
    key = setup.keys.access_key.reveal()
    assert key not in response.text and key not in str(response.headers)
    assert key not in b"".join(e.body for e in await setup.store.read()).decode()


async def test_audit_failure_fails_closed(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(events: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(setup.store, "append", broken)
    response = await setup.client.get("/crm/contacts", headers=setup.auth())
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["retry-after"] == "1"


async def test_store_failure_fails_closed(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(key_hash: bytes) -> Any:
        raise TimeoutError

    monkeypatch.setattr(setup.store, "lookup", broken)
    response = await setup.client.get("/crm/contacts", headers=setup.auth())
    assert response.status_code == 503
    assert response.json()["reason"] == "store_unavailable"


async def test_contextvar_is_reset_after_request(setup: Setup) -> None:
    await setup.client.get("/crm/contacts", headers=setup.auth())
    assert principal_var.get() is None


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope["type"])
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})


async def test_lifespan_passes_through(setup: Setup) -> None:
    inner = Recorder()
    middleware = AgentGuardMiddleware(inner, setup.guard)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await middleware({"type": "lifespan"}, receive, send)
    assert inner.scopes == ["lifespan"]
    assert sent == [{"type": "lifespan.startup.complete"}]


async def test_unknown_scope_type_raises(setup: Setup) -> None:
    middleware = AgentGuardMiddleware(Recorder(), setup.guard)

    async def noop(*args: Any) -> Any:
        return None

    with pytest.raises(RuntimeError, match="cannot guard"):
        await middleware({"type": "webtransport"}, noop, noop)


def ws_scope(
    headers: list[tuple[bytes, bytes]], extensions: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/crm/ws",
        "raw_path": b"/crm/ws",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "scheme": "ws",
        "extensions": extensions or {},
    }


async def test_websocket_without_key_is_closed_before_the_app(setup: Setup) -> None:
    inner = Recorder()
    middleware = AgentGuardMiddleware(inner, setup.guard)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await middleware(ws_scope([]), receive, send)
    assert inner.scopes == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]

    sent.clear()
    await middleware(ws_scope([], {"websocket.http.response": {}}), receive, send)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401


async def test_websocket_with_key_reaches_app(setup: Setup) -> None:
    inner = Recorder()
    middleware = AgentGuardMiddleware(inner, setup.guard)
    key = setup.keys.access_key.reveal().encode()

    async def noop(*args: Any) -> Any:
        return {"type": "websocket.connect"}

    await middleware(ws_scope([(b"authorization", b"Bearer " + key)]), noop, noop)
    assert inner.scopes == ["websocket"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/crm/ws", True), ("/crm/socket", False), ("/crm/contacts", False), ("/nowhere", False)],
)
async def test_a_websocket_needs_write_unless_its_rule_declares_a_read_feed(
    setup: Setup, path: str, allowed: bool
) -> None:
    """As in the proxy: a socket's messages can act, so a read-only key opens one only where
    the rule says ``methods={"WEBSOCKET": "read"}``; a path without a rule is refused."""
    inner = Recorder()
    middleware = AgentGuardMiddleware(inner, setup.guard)
    key = setup.keys.access_key.reveal().encode()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = ws_scope([(b"authorization", b"Bearer " + key)], {"websocket.http.response": {}})
    scope["path"], scope["raw_path"] = path, path.encode()
    await middleware(scope, receive, send)
    assert inner.scopes == (["websocket"] if allowed else [])
    if not allowed:
        assert sent[0]["type"] == "websocket.http.response.start"
        assert sent[0]["status"] == 403
        body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert body["error"] == "insufficient_scope"
        reason = "no_route_rule" if path == "/nowhere" else "insufficient_scope"
        assert body["reason"] == reason, body


async def test_websocket_through_starlette(setup: Setup) -> None:
    from starlette.testclient import TestClient

    from tests.asgi.conftest import build_app

    with TestClient(build_app(setup.guard)) as client:
        with client.websocket_connect("/crm/ws", headers=setup.auth()) as ws:
            assert ws.receive_json() == {"user": "user-1"}
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/crm/ws") as ws:
            ws.receive_json()


async def test_public_paths_must_be_absolute(setup: Setup) -> None:
    with pytest.raises(ValueError):
        AgentGuardMiddleware(Recorder(), setup.guard, public_paths=["oauth"])
