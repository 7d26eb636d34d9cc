"""The ASGI middleware decides on the canonical target, over real sockets (uvicorn in front).

Ambiguous targets are refused 400 before any key lookup (so a request without a key gets 400,
not 401) and audited; a case variant of a stricter rule's path needs that rule's level; a
public prefix never covers a target that climbs out of it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

from agentguard import Guard, Level, RouteRule
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.asgi.conftest import build_app
from tests.support.servers import LoopbackServer

AMBIGUOUS = [
    "/crm/contacts/%2e%2e/admin",
    "/crm/contacts/%252e%252e/admin",
    "/crm/contacts%2F..%2Fadmin",
    "/crm/contacts/..;/admin",
    "/crm/admin;x=1",
    "/crm/contacts%5c..%5cadmin",
    "/crm//admin",
    "/crm/admin.",
    "/crm/admin%20",
    "/crm/%ef%bd%81dmin",
    "/crm/%c0%ae%c0%ae/admin",
    "/crm/%u002e%u002e/admin",
    "/healthz/..%2f..%2fcrm/contacts",
    "/healthz/%2e%2e/crm/contacts",
]


@dataclass
class Served:
    port: int
    key: str
    store: MemoryStore


async def _build() -> tuple[object, str, MemoryStore]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rules = [
        RouteRule("/crm", service="crm"),
        RouteRule("/crm/admin", service="crm", level=Level.WRITE),
        RouteRule("/projects", service="projects"),
    ]
    guard = Guard(store, rules=rules, clock=clock)
    user = await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    return build_app(guard), keys.access_key.reveal(), store


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    app, key, store = anyio.run(_build)
    with LoopbackServer(app) as server:
        yield Served(server.port, key, store)


def get(served: Served, target: str, *, key: bool = True) -> tuple[int, dict[str, object]]:
    auth = f"Authorization: Bearer {served.key}\r\n" if key else ""
    head = f"GET {target} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(head.encode("ascii"))
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body) if body.startswith(b"{") else {}


@pytest.mark.parametrize("target", AMBIGUOUS)
def test_ambiguous_targets_are_refused_before_any_key_lookup(served: Served, target: str) -> None:
    for key in (True, False):  # without a key too: the target is judged first
        status, body = get(served, target, key=key)
        assert (status, body.get("error")) == (400, "invalid_request"), (target, body)
        assert "refused as ambiguous" in str(body.get("error_description"))
    events = [e.event() for e in anyio.run(served.store.read)]
    assert events[-1]["decision"] == "deny" and events[-1]["status"] == 400


@pytest.mark.parametrize("target", ["/crm/ADMIN/users", "/crm/Admin", "/crm/%41dmin/users"])
def test_case_variants_of_a_stricter_rule_need_its_level(served: Served, target: str) -> None:
    status, body = get(served, target)
    assert (status, body.get("scope")) == (403, "crm:write"), (target, body)


def test_canonical_targets_still_pass(served: Served) -> None:
    assert get(served, "/crm/contacts")[0] == 200
    assert get(served, "/crm/%63ontacts")[0] == 200  # an encoded letter is just the letter
    assert get(served, "/healthz", key=False)[0] == 200
