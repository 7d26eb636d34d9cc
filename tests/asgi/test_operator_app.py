"""The operator listener's JSON endpoints: operator tokens only, clear errors, never a 500."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard import Guard
from agentguard._model import ApprovalRecord, OperatorRecord
from agentguard.approvals._operators import issue_operator_token
from agentguard.asgi._operator import OperatorApp
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.testing import FakeClock, make_user
from tests.support.approval_records import held_call
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

FIELDS = {
    "id", "state", "status", "user_id", "workspace_id", "account_id", "key_id", "family_id",
    "service", "scope", "method", "path", "query", "body_digest", "body_bytes", "body_preview",
    "rule_version", "created_at", "expires_at", "decided_at", "decided_by", "consumed_at",
    "headers",
}  # fmt: skip


@dataclass
class Listener:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    token: str
    operator: OperatorRecord
    client: httpx.AsyncClient

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def held(self, **options: Any) -> ApprovalRecord:
        record = held_call(self.clock.now(), **options)
        stored: ApprovalRecord = await self.store.create_approval(record, now=self.clock.now())
        return stored

    async def events(self) -> list[dict[str, Any]]:
        return [entry.event() for entry in await self.store.read()]


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://operator")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock)
    token, record = await issue_operator_token(store, "alice", clock=clock)
    app = OperatorApp(guard, approvals=store, operators=store)
    async with _client(app) as client:
        yield Listener(clock, store, guard, token.reveal(), record, client)


async def test_healthz_answers_without_a_token(listener: Listener) -> None:
    response = await listener.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


async def test_no_token_is_401_with_a_bare_challenge(listener: Listener) -> None:
    response = await listener.client.get("/approvals")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="agentguard operator"'
    assert response.json()["reason"] == "missing_credentials"


async def test_a_live_agent_key_is_refused_with_a_clear_description(listener: Listener) -> None:
    user = await make_user(listener.store, user_id="alice", grants="crm:write")
    issued = await listener.guard.issuer.issue(user.id, "ws-1")
    for key in (issued.access_key.reveal(), issued.refresh_key.reveal()):
        response = await listener.client.get(
            "/approvals", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 401
        body = response.json()
        assert body["error"] == "invalid_token" and body["reason"] == "wrong_key_kind"
        assert "agent keys are not accepted on the operator listener" in body["error_description"]
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert key not in response.text


@pytest.mark.parametrize(
    ("header", "status", "reason"),
    [
        ("Bearer ag_op_short", 401, "malformed_key"),
        ("Bearer " + "x" * 55, 401, "malformed_key"),
        ("Basic dXNlcjpwYXNz", 400, "unsupported_scheme"),
        ("Bearer", 400, "malformed_request"),
    ],
)
async def test_a_bad_credential_is_refused(
    listener: Listener, header: str, status: int, reason: str
) -> None:
    response = await listener.client.get("/approvals", headers={"Authorization": header})
    assert response.status_code == status and response.json()["reason"] == reason
    assert "www-authenticate" in response.headers


async def test_a_revoked_or_expired_token_is_refused(listener: Listener) -> None:
    short, _ = await issue_operator_token(
        listener.store, "ci", clock=listener.clock, ttl=timedelta(minutes=1)
    )
    headers = {"Authorization": f"Bearer {short.reveal()}"}
    assert (await listener.client.get("/approvals", headers=headers)).status_code == 200
    listener.clock.advance(timedelta(minutes=1))
    response = await listener.client.get("/approvals", headers=headers)
    assert response.status_code == 401 and response.json()["reason"] == "expired"
    await listener.store.revoke_operator(listener.operator.id, now=listener.clock.now())
    response = await listener.client.get("/approvals", headers=listener.auth)
    assert response.status_code == 401 and response.json()["reason"] == "revoked"


async def test_list_shows_every_field_newest_first(listener: Listener) -> None:
    older = await listener.held(age=timedelta(minutes=2))
    newer = await listener.held(user_id="bob", body=b"x" * 10)
    response = await listener.client.get("/approvals", headers=listener.auth)
    assert response.status_code == 200
    documents = response.json()["approvals"]
    assert [d["id"] for d in documents] == [newer.id, older.id]
    assert set(documents[0]) == FIELDS
    first = documents[0]
    assert first["state"] == first["status"] == "pending" and first["body_bytes"] == 10
    assert first["body_preview"] == "x" * 10 and first["decided_at"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first["expires_at"])
    only_bob = await listener.client.get("/approvals?user_id=bob", headers=listener.auth)
    assert [d["id"] for d in only_bob.json()["approvals"]] == [newer.id]
    one = await listener.client.get("/approvals?limit=1", headers=listener.auth)
    assert [d["id"] for d in one.json()["approvals"]] == [newer.id]


async def test_status_filters_by_what_the_approval_is_now(listener: Listener) -> None:
    stale = await listener.held(ttl=timedelta(minutes=1), age=timedelta(minutes=5))
    live = await listener.held()
    await listener.client.post(f"/approvals/{live.id}/deny", headers=listener.auth)
    waiting = await listener.held()

    async def ids(status: str) -> list[str]:
        response = await listener.client.get(f"/approvals?status={status}", headers=listener.auth)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["approvals"]]

    assert await ids("pending") == [waiting.id]
    assert await ids("expired") == [stale.id]
    assert await ids("denied") == [live.id]
    assert await ids("approved") == []


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=%C2%B2",
        "colour=red",
        "status=pending&status=denied",
        "a=1&b=2&c=3&d=4",
    ],
)
async def test_bad_query_parameters_are_400(listener: Listener, query: str) -> None:
    response = await listener.client.get(f"/approvals?{query}", headers=listener.auth)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


async def test_show_one_approval_and_404_for_an_unknown_one(listener: Listener) -> None:
    held = await listener.held()
    response = await listener.client.get(f"/approvals/{held.id}", headers=listener.auth)
    assert response.status_code == 200 and response.json()["id"] == held.id
    for missing in ("apr_missing", "..", "%00bad"):
        response = await listener.client.get(f"/approvals/{missing}", headers=listener.auth)
        assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize("verb", ["approve", "deny"])
async def test_a_decision_names_the_operator_and_is_audited(listener: Listener, verb: str) -> None:
    held = await listener.held()
    response = await listener.client.post(f"/approvals/{held.id}/{verb}", headers=listener.auth)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["state"] == ("approved" if verb == "approve" else "denied")
    assert document["decided_by"] == "alice" and document["decided_at"] is not None
    [event] = await listener.events()
    assert event["action"] == "approval.decide"
    detail = event["detail"]
    assert detail == {
        "approval_id": held.id, "operator": "alice", "via": "api",
        "operator_id": detail["operator_id"],
    }  # fmt: skip
    assert str(detail["operator_id"]).startswith("op_")  # the token that decided
    again = await listener.client.post(f"/approvals/{held.id}/approve", headers=listener.auth)
    assert again.status_code == 409
    assert again.json()["error"] == "approval_not_pending"
    assert again.json()["state"] == document["state"]
    assert len(await listener.events()) == 1


async def test_deciding_an_unknown_or_expired_approval(listener: Listener) -> None:
    response = await listener.client.post("/approvals/apr_missing/approve", headers=listener.auth)
    assert response.status_code == 404 and response.json()["approval_id"] == "apr_missing"
    held = await listener.held(ttl=timedelta(minutes=1))
    listener.clock.advance(timedelta(minutes=2))
    response = await listener.client.post(f"/approvals/{held.id}/approve", headers=listener.auth)
    assert response.status_code == 409 and response.json()["state"] == "expired"
    assert await listener.events() == []


async def test_wrong_methods_are_405_and_unknown_paths_404(listener: Listener) -> None:
    held = await listener.held()
    cases = [
        ("GET", f"/approvals/{held.id}/approve", "POST"),
        ("POST", "/approvals", "GET"),
        ("DELETE", f"/approvals/{held.id}", "GET"),
        ("POST", "/healthz", "GET, HEAD"),
    ]
    for method, path, allow in cases:
        response = await listener.client.request(method, path, headers=listener.auth)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allow
    response = await listener.client.get("/metrics", headers=listener.auth)
    assert response.status_code == 404
    stored = await listener.store.get_approval(held.id)
    assert stored is not None and stored.status.value == "pending"


class Failing:
    """The memory store, with the named methods failing like a backend outage."""

    def __init__(self, store: MemoryStore, *failing: str) -> None:
        self._store = store
        self._failing = set(failing)

    def __getattr__(self, name: str) -> Any:
        if name in self._failing:

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise OSError("connection reset")

            return fail
        return getattr(self._store, name)


@pytest.mark.parametrize(
    ("failing", "method", "path"),
    [
        ("list_approvals", "GET", "/approvals"),
        ("get_approval", "GET", "/approvals/apr_x"),
        ("decide_approval", "POST", "/approvals/apr_x/approve"),
        ("lookup_operator", "GET", "/approvals"),
        ("append", "POST", "/approvals/{held}/deny"),
    ],
)
async def test_a_store_or_audit_outage_is_503_never_500(
    listener: Listener, failing: str, method: str, path: str
) -> None:
    held = await listener.held()
    broken = Failing(listener.store, failing)
    guard = Guard(broken, clock=listener.clock)  # the audit writer appends to the broken store
    app = OperatorApp(guard, approvals=broken, operators=broken)
    async with _client(app) as client:
        response = await client.request(method, path.format(held=held.id), headers=listener.auth)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "connection reset" not in response.text


async def test_a_bug_is_503_not_500(listener: Listener) -> None:
    class Buggy:
        async def list_approvals(self, **options: Any) -> Any:
            return [object()]  # not a record: approval_document fails

    app = OperatorApp(listener.guard, approvals=Buggy(), operators=listener.store)  # type: ignore[arg-type]
    async with _client(app) as client:
        response = await client.get("/approvals", headers=listener.auth)
    assert response.status_code == 503


async def test_websockets_are_closed_and_lifespan_completes(listener: Listener) -> None:
    app = OperatorApp(listener.guard, approvals=listener.store, operators=listener.store)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def connect() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await app({"type": "websocket", "path": "/approvals", "headers": []}, connect, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def lifespan_receive() -> dict[str, Any]:
        return next(messages)

    sent.clear()
    await app({"type": "lifespan"}, lifespan_receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_over_a_real_socket_on_sqlite(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "agentguard.db")
    guard = Guard(store)

    async def prepare() -> tuple[str, str]:
        await store.initialize()
        token, _ = await issue_operator_token(store, "alice", clock=guard.clock)
        held = await store.create_approval(held_call(guard.clock.now()), now=guard.clock.now())
        return token.reveal(), held.id

    token, approval_id = anyio.run(prepare)
    app = OperatorApp(guard, approvals=store, operators=store)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with LoopbackServer(app) as server, httpx.Client(base_url=server.url) as client:
            pending = client.get("/approvals?status=pending", headers=auth)
            assert [d["id"] for d in pending.json()["approvals"]] == [approval_id]
            approved = client.post(f"/approvals/{approval_id}/approve", headers=auth)
            assert approved.status_code == 200 and approved.json()["state"] == "approved"
            assert client.get("/approvals?status=pending", headers=auth).json() == {"approvals": []}
            assert client.get("/approvals").status_code == 401
    finally:
        anyio.run(store.close)
    events = anyio.run(_read, tmp_path / "agentguard.db")
    assert [e["action"] for e in events] == ["approval.decide"]


async def _read(path: Path) -> list[dict[str, Any]]:
    async with SQLiteStore(path) as store:
        return [entry.event() for entry in await store.read()]
