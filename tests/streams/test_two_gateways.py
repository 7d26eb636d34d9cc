"""Over real sockets, two gateway instances on one database: a stream opened through B ends
soon after its key is revoked through A's ``/oauth/revoke``.

SQLite (two stores on one file, B watching ``PRAGMA data_version``) and PostgreSQL (``LISTEN``
on B, the triggers' ``NOTIFY`` from A's write); B's re-check interval is an hour, so only the
revocation event can cut in time. Server-sent events end with ``event: error`` and no clean end
of the body; a proxied websocket closes with 1008 and reason ``revoked``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets.sync.client
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket

from agentguard import (
    CredentialOwner,
    CredentialScope,
    Guard,
    Level,
    Placement,
    ServiceConfig,
    ServiceRoute,
)
from agentguard.asgi import OAuthApp, ProxyApp, guard_lifespan
from agentguard.config import StreamSettings
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import PostgresStore, SQLiteStore
from agentguard.testing import make_user
from tests.backends.services import drop_schema, postgres_dsn, random_name
from tests.conftest import CANARY
from tests.streams.support import DEADLINE
from tests.streams.test_sse_end_to_end import ticking_vendor
from tests.support.servers import LoopbackServer

VENDOR_KEY = f"ws-{CANARY}"

StoreFactory = Callable[[], Any]


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        await websocket.send_text(await websocket.receive_text())


async def _vendor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """SSE ticks over HTTP, an echo over websockets."""
    if scope["type"] == "websocket":
        await Starlette(routes=[WebSocketRoute("/v1/socket", _echo)])(scope, receive, send)
    else:
        await ticking_vendor(scope, receive, send)


def _instance(make_store: StoreFactory, keyring: KeyRing, vendor: str) -> Starlette:
    store = make_store()  # opened on the server's own event loop
    service = ServiceConfig(
        name="crm",
        base_url=vendor + "/v1",
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
        routes=(ServiceRoute(path="/", methods={"WEBSOCKET": Level.READ}),),
    )
    guard = Guard(
        store,
        services=[service],
        swapper=CredentialSwapper(CredentialVault(store, keyring)),
        streams=StreamSettings(recheck_interval=3600.0),  # only the revocation event cuts
    )
    proxy = ProxyApp(guard, "crm")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with guard_lifespan(guard)(app):
                yield
        finally:
            await proxy.aclose()
            await guard.audit.flush()
            await store.close()

    routes = [Mount("/crm", app=proxy), Mount("/oauth", app=OAuthApp(guard))]
    return Starlette(routes=routes, lifespan=lifespan)


@dataclass
class Pair:
    a: LoopbackServer
    b: LoopbackServer
    key: str


@contextmanager
def _pair(make_store: StoreFactory, keyring: KeyRing, key: str) -> Iterator[Pair]:
    with LoopbackServer(_vendor) as vendor:
        app_a = _instance(make_store, keyring, vendor.url)
        app_b = _instance(make_store, keyring, vendor.url)
        with LoopbackServer(app_a, lifespan="on") as a, LoopbackServer(app_b, lifespan="on") as b:
            yield Pair(a, b, key)


async def _seed(store: Any, keyring: KeyRing) -> str:
    user = await make_user(store, grants="crm:read")
    await CredentialVault(store, keyring).put(
        "crm", CredentialOwner.USER, user.id, VENDOR_KEY, scope=CredentialScope.USER
    )
    return (await Guard(store).issuer.issue(user.id, "ws-1")).access_key.reveal()


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    keyring = KeyRing.generate()
    if request.param == "sqlite":
        path = tmp_path / "agentguard.db"

        async def seed_sqlite() -> str:
            async with SQLiteStore(path) as store:
                return await _seed(store, keyring)

        key = anyio.run(seed_sqlite)
        with _pair(lambda: SQLiteStore(path), keyring, key) as found:
            yield found
        return

    async def schema() -> tuple[str, str, str]:
        dsn, name = await postgres_dsn(), random_name("agentguard_test")
        async with PostgresStore(dsn, schema=name) as store:
            return dsn, name, await _seed(store, keyring)

    dsn, name, key = anyio.run(schema)
    try:
        with _pair(lambda: PostgresStore(dsn, schema=name), keyring, key) as found:
            yield found
    finally:
        anyio.run(drop_schema, dsn, name)


_revoked: list[float] = []


def _read_revoking_at_tick_2(got: httpx.Response, pair: Pair, lines: list[str]) -> float:
    """Read the stream, revoking through A at the third tick; the cut ends it (raises)."""
    _revoked.clear()
    for line in got.iter_lines():
        lines.append(line)
        if not _revoked and line == "data: tick 2":
            _revoked.append(_revoke_through_a(pair))
    return _revoked[0]


def _revoke_through_a(pair: Pair) -> float:
    response = httpx.post(pair.a.url + "/oauth/revoke", data={"token": pair.key}, timeout=10)
    assert response.status_code == 200
    return time.perf_counter()


def test_an_sse_stream_through_b_is_cut_after_a_revocation_through_a(pair: Pair) -> None:
    lines: list[str] = []
    with (
        httpx.Client(timeout=DEADLINE * 3) as http,
        http.stream("GET", pair.b.url + "/crm/events", headers={"X-Api-Key": pair.key}) as got,
    ):
        assert got.status_code == 200, got.read()
        with pytest.raises(httpx.RemoteProtocolError):  # no clean end of the body
            _read_revoking_at_tick_2(got, pair, lines)
    assert _revoked, "the stream never reached its third tick"
    assert time.perf_counter() - _revoked[0] < DEADLINE
    error = json.loads(lines[lines.index("event: error") + 1].removeprefix("data: "))
    assert (error["error"], error["reason"]) == ("invalid_token", "revoked")
    assert "data: done" not in lines


def test_a_websocket_through_b_is_closed_after_a_revocation_through_a(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="websockets")  # its debug log prints the headers
    url = pair.b.url.replace("http://", "ws://") + "/crm/socket"
    with websockets.sync.client.connect(
        url, additional_headers={"X-Api-Key": pair.key}, open_timeout=DEADLINE
    ) as ws:
        ws.send("ping")
        assert ws.recv(timeout=DEADLINE) == "ping"
        revoked_at = _revoke_through_a(pair)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            _until_closed(ws)
    assert time.perf_counter() - revoked_at < DEADLINE
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "revoked")


def _until_closed(ws: websockets.sync.client.ClientConnection) -> None:
    while True:
        ws.recv(timeout=DEADLINE * 3)
