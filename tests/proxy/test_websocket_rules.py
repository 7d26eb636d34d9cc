"""What a proxied websocket needs (its requirement), and the refusals that come before any
socket: no websocket client installed, a scope type the proxy does not serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import Guard, Level, RouteRule, ServiceConfig
from agentguard._permissions import PermissionChecker
from agentguard.asgi import ProxyApp, _websocket
from agentguard.asgi._websocket import WEBSOCKET, websocket_requirement
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio

LEVELS = st.sampled_from([Level.READ, Level.WRITE])


def checker(**rule: Any) -> PermissionChecker:
    return PermissionChecker([RouteRule("/", "crm", **rule)])


def test_a_websocket_needs_write_by_default_and_its_rule_can_make_it_a_read() -> None:
    def level(rules: PermissionChecker) -> Level:
        needed = websocket_requirement(rules, "/rooms")
        assert needed is not None
        return needed.level

    assert level(checker()) is Level.WRITE
    assert level(checker(methods={WEBSOCKET: "read"})) is Level.READ
    assert level(checker(level="read")) is Level.READ
    assert level(checker(methods={WEBSOCKET: "read", "GET": "write"})) is Level.WRITE


def test_an_approval_or_cost_on_get_holds_the_websocket_too() -> None:
    needed = websocket_requirement(checker(approval={"GET"}, cost={"GET": 5}), "/rooms")
    assert needed is not None
    assert (needed.approval, needed.cost) == (True, 5)
    needed = websocket_requirement(checker(approval={WEBSOCKET}, cost={"POST": 9}), "/x")
    assert needed is not None
    assert (needed.approval, needed.cost) == (True, 1)


def test_no_rule_no_websocket() -> None:
    rules = PermissionChecker([RouteRule("/feed", "crm")])
    assert websocket_requirement(rules, "/rooms") is None


@given(
    fixed=st.none() | LEVELS,
    get=st.none() | LEVELS,
    socket=st.none() | LEVELS,
    held=st.sets(st.sampled_from(["GET", WEBSOCKET, "POST"])),
)
def test_a_websocket_needs_at_least_what_a_get_and_a_websocket_need(
    fixed: Level | None, get: Level | None, socket: Level | None, held: set[str]
) -> None:
    methods = {name: value for name, value in (("GET", get), (WEBSOCKET, socket)) if value}
    rules = checker(level=fixed, methods=methods, approval=held)
    needed = websocket_requirement(rules, "/a/b")
    as_get, as_socket = rules.requirement("GET", "/a/b"), rules.requirement(WEBSOCKET, "/a/b")
    assert needed is not None and as_get is not None and as_socket is not None
    assert needed.level == max(as_get.level, as_socket.level)
    assert needed.approval == bool(held & {"GET", WEBSOCKET})
    assert needed.service == "crm"


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ProxyApp, MemoryStore]]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    crm = ServiceConfig(name="crm", base_url="https://crm.example")
    swapper = CredentialSwapper(CredentialVault(store, KeyRing.generate(), clock=clock))
    app = ProxyApp(Guard(store, clock=clock, services=[crm], swapper=swapper), "crm")
    yield app, store
    await app.aclose()


async def run(app: ProxyApp, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("denial", [True, False], ids=["denial-response", "close"])
async def test_without_aiohttp_a_websocket_is_refused_naming_the_extra(
    proxy: tuple[ProxyApp, MemoryStore], monkeypatch: pytest.MonkeyPatch, denial: bool
) -> None:
    app, store = proxy
    monkeypatch.setattr(_websocket, "_client", lambda: None)
    scope: dict[str, Any] = {"type": "websocket", "path": "/x", "headers": [], "scheme": "ws"}
    if denial:
        scope["extensions"] = {"websocket.http.response": {}}
    sent = await run(app, scope)
    if denial:
        assert sent[0]["status"] == 503
        assert b"agentguard[server]" in sent[1]["body"]
    else:
        assert sent == [
            {"type": "websocket.close", "code": 1011, "reason": "install agentguard[server]"}
        ]
    (event,) = [entry.event() for entry in await store.read()][-1:]
    assert (event["decision"], event["reason"]) == ("deny", "internal_error")


async def test_a_websocket_without_a_key_is_refused_before_accept(
    proxy: tuple[ProxyApp, MemoryStore],
) -> None:
    app, _ = proxy
    sent = await run(app, {"type": "websocket", "path": "/x", "headers": [], "scheme": "ws"})
    assert [message["type"] for message in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008


async def test_an_unknown_scope_type_is_an_error(proxy: tuple[ProxyApp, MemoryStore]) -> None:
    with pytest.raises(ValueError, match="http and websocket"):
        await run(proxy[0], {"type": "webtransport", "path": "/x"})


def test_the_message_cap_is_at_least_one_byte() -> None:
    store = MemoryStore()
    crm = ServiceConfig(name="crm", base_url="https://crm.example")
    swapper = CredentialSwapper(CredentialVault(store, KeyRing.generate()))
    guard = Guard(store, services=[crm], swapper=swapper)
    with pytest.raises(ValueError, match="at least 1"):
        ProxyApp(guard, "crm", websocket_max_bytes=0)
