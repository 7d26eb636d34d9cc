"""A small world for the gate tests: users, keys, a recording app, and the approval round trip.

Everything is built on one store and one :class:`~agentguard.testing.FakeClock`. ``alice`` has
two key families (``alice`` and ``alice2``), ``bob`` has the same grants as alice; ``reader``
may only read. :class:`Recorder` is the app (or upstream) behind the guard: it records every
call that reached it, so a test can compare what ran with what was approved.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from agentguard import Guard, RouteRule
from agentguard.approvals import ApprovalPolicy
from agentguard.approvals._decide import decide
from agentguard.asgi import AgentGuardMiddleware
from agentguard.asgi._types import Receive, Scope, Send
from agentguard.testing import FakeClock, make_user

APPROVAL = "AgentGuard-Approval"
HELD = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ORIGIN = "http://gw.test"
APPROVAL_TTL = timedelta(minutes=5)  # shorter than an access key lives


def crm_rules(*, cost: int | dict[str, int] = 1, approval: Any = HELD) -> list[RouteRule]:
    """``/crm`` needs crm (its writes held for approval), ``/open`` needs any valid key."""
    return [RouteRule("/crm", "crm", approval=approval, cost=cost), RouteRule("/open", None)]


@dataclass(frozen=True)
class Call:
    """One call as the app behind the guard received it."""

    method: str
    path: str
    query: str
    body: bytes
    headers: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return "sha-256:" + hashlib.sha256(self.body).hexdigest()


@dataclass
class Recorder:
    """An ASGI app that records each request it serves and answers ``200 {"ok": true}``."""

    calls: list[Call] = field(default_factory=list)
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] == "websocket":
            with self._lock:
                self.calls.append(Call("WEBSOCKET", scope["path"], "", b""))
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        call = Call(
            scope["method"],
            scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0],
            scope.get("query_string", b"").decode("latin-1"),
            body,
            tuple(name.decode("latin-1").lower() for name, _ in scope["headers"]),
        )
        with self._lock:
            self.calls.append(call)
        document = json.dumps({"ok": True}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(document)),
            *self.extra_headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": document})


@dataclass
class Party:
    """One key of one user (the secret only in ``key``, never printed)."""

    user_id: str
    family_id: str
    key_id: str
    key: str = field(repr=False)

    def auth(self, approval: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}", **extra}
        if approval is not None:
            headers[APPROVAL] = approval
        return headers


async def issue(guard: Guard, user_id: str, workspace: str = "ws-1") -> Party:
    keys = await guard.issuer.issue(user_id, workspace)
    record = keys.access
    return Party(record.user_id, record.family_id, record.id, keys.access_key.reveal())


@dataclass
class World:
    """A guard over ``store`` with its parties; ``app`` is the guarded recorder."""

    clock: FakeClock
    store: Any
    guard: Guard
    recorder: Recorder
    alice: Party
    alice2: Party
    bob: Party
    reader: Party

    @property
    def app(self) -> AgentGuardMiddleware:
        return self.guarded(self.guard)

    def guarded(self, guard: Guard) -> AgentGuardMiddleware:
        """The recorder behind ``guard`` (another instance's, an edited rule's)."""
        return AgentGuardMiddleware(self.recorder, guard)

    def client(self, app: Any = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app if app is not None else self.app)
        return httpx.AsyncClient(transport=transport, base_url=ORIGIN)

    def rebuilt(self, rules: Sequence[RouteRule], **options: Any) -> Guard:
        """Another guard (another instance) on the same store and clock."""
        return make_guard(self.store, self.clock, rules, **options)


def make_guard(store: Any, clock: FakeClock, rules: Sequence[RouteRule], **options: Any) -> Guard:
    options.setdefault("approvals", ApprovalPolicy(max_body=4096, ttl=APPROVAL_TTL))
    return Guard(store, rules=rules, clock=clock, **options)


async def populate(store: Any) -> None:
    """The users every world has (idempotent: two instances over one database share them)."""
    await make_user(store, user_id="alice", grants="crm:write")
    await make_user(store, user_id="bob", grants="crm:write")
    await make_user(store, user_id="reader", grants="crm:read")


async def build_world(
    store: Any, clock: FakeClock, rules: Sequence[RouteRule] | None = None, **options: Any
) -> World:
    await populate(store)
    guard = make_guard(store, clock, crm_rules() if rules is None else rules, **options)
    parties = [await issue(guard, user) for user in ("alice", "alice", "bob", "reader")]
    return World(clock, store, guard, Recorder(), *parties)


async def approve(guard: Guard, approval_id: str, *, yes: bool = True) -> None:
    """An operator's decision, taken as the CLI and the operator listener take it."""
    store = guard.approval_store
    assert store is not None
    await decide(store, guard.audit, approval_id, approve=yes, by="op-1", clock=guard.clock)


def refusal(response: httpx.Response, status: int, error: str, reason: str) -> dict[str, Any]:
    """Assert ``response`` is the RFC 6749-shaped refusal named; its JSON body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == error and body["reason"] == reason, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    return body


async def hold(
    client: httpx.AsyncClient, party: Party, method: str, url: str, content: bytes = b""
) -> str:
    """Send a held call without an approval; the approval id it was held under."""
    response = await client.request(method, url, headers=party.auth(), content=content)
    body = refusal(response, 403, "approval_required", "approval_required")
    assert response.headers[APPROVAL] == body["approval_id"]
    approval_id: str = body["approval_id"]
    return approval_id


async def held_and_approved(
    world: World,
    client: httpx.AsyncClient,
    method: str,
    url: str,
    content: bytes = b"",
    *,
    party: Party | None = None,
) -> str:
    approval_id = await hold(client, party or world.alice, method, url, content)
    await approve(world.guard, approval_id)
    return approval_id


async def audit_events(store: Any) -> list[dict[str, Any]]:
    return [entry.event() for entry in await store.read()]
