"""Storage faults over real sockets: uvicorn on loopback, real drivers, real outages.

- a :class:`FaultyStore` subset (the methods every request path uses), bearer and DPoP: 503,
  never a 500 or a dropped connection;
- the DPoP replay cache on a Redis port nobody listens on (``[dpop] replay``): DPoP requests
  503 and audited, bearer requests unaffected, ``/readyz`` names the replay cache; and on a
  real Redis, proofs are burnt there;
- PostgreSQL connections terminated while DPoP requests flow: the replay check alone on
  PostgreSQL (so the audit store stays up and every refusal is on record), and the whole
  gateway on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import redis.asyncio

from agentguard.errors import Reason
from agentguard.storage import MemoryStore, PostgresStore
from tests.backends.services import drop_schema, postgres_dsn, random_name, redis_url
from tests.product.faults import (
    ERRORS,
    PROBES,
    SCHEMES,
    World,
    build_world,
    check_refusal,
    proxied,
)
from tests.support.servers import LoopbackServer, free_port

HOT_METHODS = ("lookup", "check_and_store", "get_credential", "append", "rotate", "revoke")


@contextmanager
def served(scheme: str, **options: Any) -> Iterator[tuple[World, httpx.Client]]:
    """A world served by uvicorn on loopback (lifespan on), and a client for it."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    world = anyio.run(lambda: build_world(scheme, origin=origin, **options))
    with (
        LoopbackServer(world.gateway.app, port=port, lifespan="on"),
        httpx.Client(timeout=10, trust_env=False) as client,
    ):
        yield world, client


def _events(world: World, response: httpx.Response) -> list[dict[str, Any]]:
    request_id = response.headers["x-request-id"]
    return anyio.run(world.events, request_id)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_faults_over_real_sockets_are_503_never_500_or_a_dropped_connection(
    scheme: str,
) -> None:
    fired: Counter[str] = Counter()
    with served(scheme) as (world, client):
        for method in HOT_METHODS:
            if method not in world.store.methods:
                continue
            for kind in ("OSError", "asyncpg", "redis", "third-party"):
                world.store.fail(method, ERRORS[kind])
                for probe in PROBES:
                    before = world.store.injected[method]
                    response = client.send(PROBES[probe](world))  # a dropped connection raises
                    if world.store.injected[method] > before:
                        fired[method] += 1
                        check_refusal(world, method, probe, response, _events(world, response))
                    else:
                        assert response.status_code == 200, (method, probe, response.text)
                world.store.heal()
                anyio.run(world.renew)
    expected = set(HOT_METHODS) - ({"check_and_store"} if scheme == "bearer" else set())
    assert set(fired) >= expected - {"check_and_store"}, fired
    if scheme == "dpop":
        assert fired["check_and_store"] > 0, fired


def test_replay_cache_on_an_unreachable_redis_is_503_audited_and_not_ready() -> None:
    port = free_port()  # nothing listens there
    with served("dpop", replay=f"redis://127.0.0.1:{port}/15") as (world, client):
        assert type(world.gateway.guard.replay_cache).__name__ == "RedisReplayCache"
        for probe in ("proxy", "token"):
            response = client.send(PROBES[probe](world))
            check_refusal(world, "check_and_store", probe, response, _events(world, response))
        ready = client.send(PROBES["readyz"](world))
        assert ready.status_code == 503, ready.text
        assert ready.json()["unavailable"] == {"replay cache": "ConnectionError"}, ready.text
        assert str(port) not in ready.text  # names the role, never the URL
        bearer = anyio.run(world.gateway.guard.issuer.issue, world.user.id, "ws-1")
        path = "/crm/contacts"
        headers = {"Authorization": f"Bearer {bearer.access_key.reveal()}"}
        unbound = client.get(world.origin + path, headers=headers)
        assert unbound.status_code == 200, unbound.text  # no replay check on this path


def test_replay_cache_on_redis_burns_each_proof_once() -> None:
    url = anyio.run(redis_url)
    prefix = "agentguard:replay:"
    with served("dpop", replay=url) as (world, client):
        request = proxied(world)
        first = client.send(request)
        assert first.status_code == 200, first.text
        again = client.send(request)  # the same proof, replayed
        assert again.status_code == 401, again.text
        assert again.json()["reason"] == Reason.DPOP_REPLAYED.value
        assert client.send(PROBES["readyz"](world)).json() == {"status": "ready"}

    async def stored() -> int:
        async with redis.asyncio.Redis.from_url(url) as direct:
            return len([key async for key in direct.scan_iter(match=prefix + "*", count=1000)])

    assert anyio.run(stored) >= 1


class _ReplayOnPostgres(MemoryStore):
    """Keys, credentials and audit in memory; only the DPoP replay check goes to PostgreSQL."""

    def __init__(self, replay: PostgresStore) -> None:
        super().__init__()
        self.replay = replay

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        return await self.replay.check_and_store(key, expires_at)

    async def initialize(self) -> None:
        await self.replay.initialize()

    async def close(self) -> None:
        await self.replay.close()


@contextmanager
def cutting(dsn: str, application: str, *, every: float = 0.02) -> Iterator[list[int]]:
    """Terminate the connections named ``application`` every ``every`` seconds, in a thread."""
    cuts: list[int] = []
    stop = threading.Event()

    async def loop() -> None:
        admin = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    application,
                )
                cuts.append(int(killed))
                await anyio.sleep(every)
        finally:
            await admin.close()

    thread = threading.Thread(target=anyio.run, args=(loop,), daemon=True)
    thread.start()
    try:
        yield cuts
    finally:
        stop.set()
        thread.join(10)


def _dpop_under_cuts(
    world: World, client: httpx.Client, dsn: str, application: str
) -> Counter[int]:
    """DPoP requests while the connections are cut, then until one succeeds again."""
    statuses: Counter[int] = Counter()
    refusals: list[httpx.Response] = []
    with cutting(dsn, application) as cuts:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            response = client.send(proxied(world))  # a dropped connection raises here
            statuses[response.status_code] += 1
            if response.status_code == 503:
                refusals.append(response)
    assert sum(cuts) > 0, "no connection of the store was found to terminate"
    deadline = time.monotonic() + 10
    while True:  # recovers without a restart
        response = client.send(proxied(world))
        statuses[response.status_code] += 1
        if response.status_code == 200:
            break
        assert time.monotonic() < deadline, "no 200 within 10 s of the cuts ending"
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, statuses
    for refusal in refusals:
        body = refusal.json()
        assert body["error"] == "temporarily_unavailable", body
        assert refusal.headers["retry-after"] == "1"
    return statuses


def test_postgres_replay_check_cut_is_503_and_audited() -> None:
    dsn = anyio.run(postgres_dsn)
    schema = random_name("agentguard_cut")
    replay = PostgresStore.from_url(f"{dsn}?schema={schema}&application_name={schema}")
    try:
        with served("dpop", memory=_ReplayOnPostgres(replay)) as (world, client):
            statuses = _dpop_under_cuts(world, client, dsn, schema)
            entries = anyio.run(world.memory.read)
        print(f"\nreplay check on PostgreSQL, cut: {dict(statuses)}")
        decisions = [entry.event() for entry in entries]
        denied = [e for e in decisions if e.get("reason") == Reason.STORE_UNAVAILABLE.value]
        assert len(denied) == statuses[503], (statuses, len(denied))  # every refusal on record
        assert all(e["status"] == 503 and e["decision"] == "deny" for e in denied)
    finally:
        anyio.run(drop_schema, dsn, schema)


def test_postgres_gateway_cut_under_dpop_is_503_never_500() -> None:
    dsn = anyio.run(postgres_dsn)
    schema = random_name("agentguard_cut")
    seed = PostgresStore.from_url(f"{dsn}?schema={schema}")  # not named: never cut
    store = PostgresStore.from_url(f"{dsn}?schema={schema}&application_name={schema}")
    try:
        with served("dpop", memory=store, seed=seed) as (world, client):
            statuses = _dpop_under_cuts(world, client, dsn, schema)

        async def allows() -> int:
            async with PostgresStore.from_url(f"{dsn}?schema={schema}") as reader:
                entries = await reader.read()
            events = [entry.event() for entry in entries]
            return sum(e["action"] == "guard.decision" and e["decision"] == "allow" for e in events)

        allowed = anyio.run(allows)
        print(f"\nDPoP gateway on PostgreSQL, cut: {dict(statuses)}, audited allows {allowed}")
        # every 200 was audited; an allow whose credential read then failed adds a 503
        assert statuses[200] <= allowed <= statuses[200] + statuses[503], (statuses, allowed)
    finally:
        anyio.run(drop_schema, dsn, schema)
