"""Over real sockets: two gateway instances (ProxyApps under uvicorn, each with its own event
loop and its own PostgresStore) share one PostgreSQL schema. An SSE stream opened through B
ends with ``event: error`` soon after its key is revoked through A's ``/oauth/revoke`` (or its
user is disabled by an operator's SQL), instead of running to its end."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import CredentialOwner, CredentialScope, Guard, Placement, ServiceConfig
from agentguard.asgi import OAuthApp, ProxyApp, guard_lifespan
from agentguard.config import StreamSettings
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import PostgresStore
from agentguard.storage._postgres._notify import install_notify
from agentguard.testing import make_user
from tests.backends.services import temporary_schema
from tests.conftest import CANARY
from tests.streams.support import DEADLINE
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

TICKS = 400  # 20 s of events at 50 ms: the stream must not run to its end
VENDOR_KEY = f"sse-{CANARY}"


async def ticking_vendor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream that streams ``data: tick N`` every 50 ms for 20 s, until the gateway
    hangs up (uvicorn drops sends to a gone client silently: watch for the disconnect)."""
    assert scope["type"] == "http"
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async with anyio.create_task_group() as group:

        async def hang_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(hang_up)
        for tick in range(TICKS):
            body = f"data: tick {tick}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await anyio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"data: done\n\n"})
        group.cancel_scope.cancel()


@dataclass
class Deployment:
    dsn: str
    schema: str
    a: LoopbackServer
    b: LoopbackServer
    key: str
    user_id: str


def instance(dsn: str, schema: str, keyring: KeyRing, vendor: str, *, listen: bool) -> Starlette:
    """One gateway instance. With ``listen`` its lifespan starts the live-stream registry at
    startup (``guard_lifespan``); without, the registry starts on the first stream."""
    store = PostgresStore(dsn, schema=schema)  # opened on the server's own event loop
    service = ServiceConfig(
        name="crm",
        base_url=vendor,
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
    )
    swapper = CredentialSwapper(CredentialVault(store, keyring))
    guard = Guard(
        store,
        services=[service],
        swapper=swapper,
        streams=StreamSettings(recheck_interval=3600.0),  # only the NOTIFY can cut in time
    )
    proxy = ProxyApp(guard, "crm")

    @asynccontextmanager
    async def closing(app: Starlette) -> AsyncIterator[None]:
        try:
            if listen:
                async with guard_lifespan(guard)(app):
                    yield
            else:
                yield
        finally:
            await guard.streams.aclose()
            await proxy.aclose()
            await guard.audit.flush()
            await store.close()

    routes = [Mount("/crm", app=proxy), Mount("/oauth", app=OAuthApp(guard))]
    return Starlette(routes=routes, lifespan=closing)


@contextmanager
def servers(
    dsn: str, schema: str, keyring: KeyRing, *, listen: bool
) -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    with LoopbackServer(ticking_vendor) as vendor:
        app_a = instance(dsn, schema, keyring, vendor.url, listen=False)
        app_b = instance(dsn, schema, keyring, vendor.url, listen=listen)
        with LoopbackServer(app_a, lifespan="on") as a, LoopbackServer(app_b, lifespan="on") as b:
            yield a, b


@pytest.fixture(params=[True, False], ids=["b_listens_from_startup", "b_starts_on_demand"])
async def deployment(request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    async with temporary_schema() as (dsn, schema):
        keyring = KeyRing.generate()
        async with PostgresStore(dsn, schema=schema) as setup:
            connection = await asyncpg.connect(dsn)
            try:
                await install_notify(connection, schema)  # schema.py's migration, once merged
            finally:
                await connection.close()
            user = await make_user(setup, grants="crm:read")
            await CredentialVault(setup, keyring).put(
                "crm", CredentialOwner.USER, user.id, VENDOR_KEY, scope=CredentialScope.USER
            )
            keys = await Guard(setup).issuer.issue(user.id, "ws-1")
        with servers(dsn, schema, keyring, listen=request.param) as (a, b):
            yield Deployment(dsn, schema, a, b, keys.access_key.reveal(), user.id)


async def revoke_through_a(deployment: Deployment, client: httpx.AsyncClient) -> None:
    response = await client.post(deployment.a.url + "/oauth/revoke", data={"token": deployment.key})
    assert response.status_code == 200


async def disable_by_sql(deployment: Deployment, client: httpx.AsyncClient) -> None:
    connection = await asyncpg.connect(deployment.dsn)
    try:
        await connection.execute(
            f'UPDATE "{deployment.schema}".users SET enabled = false WHERE id = $1',  # noqa: S608
            deployment.user_id,
        )
    finally:
        await connection.close()


async def audited_cuts(reader: PostgresStore) -> list[dict[str, object]]:
    """The log's stream-cut events, once it holds one (within ``DEADLINE``).

    The registry cuts the lease first (so nothing more of the stream leaves) and appends the
    cut's audit event right after, so the client can see its stream end a moment before the
    event is committed: read until it is there rather than once.
    """
    with anyio.fail_after(DEADLINE):
        while True:
            events = [entry.event() for entry in await reader.read()]
            cuts = [
                e
                for e in events
                if isinstance(e["detail"], dict) and e["detail"].get("stream") == "cut"
            ]
            if cuts:
                return cuts
            await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("change", "reason"),
    [(revoke_through_a, "revoked"), (disable_by_sql, "user_disabled")],
    ids=["revoked_through_a", "user_disabled_by_sql"],
)
async def test_an_sse_stream_through_b_ends_with_an_error_event_after_a_revocation(
    deployment: Deployment, change: Any, reason: str
) -> None:
    lines: list[str] = []
    cut_at = None

    async def read_until_the_end() -> None:
        nonlocal cut_at
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client,
            client.stream(
                "GET", deployment.b.url + "/crm/events", headers={"X-Api-Key": deployment.key}
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            with anyio.fail_after(DEADLINE * 3):
                async for line in response.aiter_lines():
                    lines.append(line)
                    if cut_at is None and line == "data: tick 2":
                        await change(deployment, client)
                        cut_at = time.perf_counter()

    with pytest.raises(httpx.RemoteProtocolError):  # no clean end of the body
        await read_until_the_end()
    assert cut_at is not None
    ended = time.perf_counter() - cut_at
    assert ended < DEADLINE, ended
    assert "event: error" in lines
    data = lines[lines.index("event: error") + 1]
    body = json.loads(data.removeprefix("data: "))
    assert body["error"] == "invalid_token"
    assert body["reason"] == reason
    ticks = [line for line in lines if line.startswith("data: tick")]
    assert len(ticks) < 60, len(ticks)  # 3 s of ticks at most, of 400
    assert "data: done" not in lines
    async with PostgresStore(deployment.dsn, schema=deployment.schema) as reader:
        cuts = await audited_cuts(reader)
    assert len(cuts) == 1
    assert cuts[0]["reason"] == reason
    assert cuts[0]["detail"]["trigger"] == "event"  # type: ignore[index]
    assert cuts[0]["path"] == "/crm/events"
