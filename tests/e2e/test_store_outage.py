"""The store goes away: requests fail closed with 503, and work again once it is back."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from agentguard import Guard, KeyKind, RouteRule, generate_key
from agentguard.storage import PostgresStore
from agentguard.testing import make_user
from tests.asgi.conftest import build_app
from tests.backends.services import postgres_dsn, temporary_schema
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


async def test_unreachable_store_is_503_with_a_clear_body() -> None:
    await postgres_dsn()  # skip (or fail when required) without a server to compare with
    store = PostgresStore(f"postgresql://nobody@127.0.0.1:{free_port()}/none", command_timeout=2)
    guard = Guard(store, rules=[RouteRule("/crm", service="crm")])
    transport = httpx.ASGITransport(app=build_app(guard))
    well_formed = {"Authorization": f"Bearer {generate_key(KeyKind.ACCESS).reveal()}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        malformed = await client.get("/crm/contacts", headers={"Authorization": "Bearer x"})
        response = await client.get("/crm/contacts", headers=well_formed)
    # A malformed key names no one and needs no store: refused (401) and counted in the
    # refusal summary, which waits for the store. A well-formed key needs the store to be
    # resolved: 503, never a guess.
    assert malformed.status_code == 401
    assert malformed.json()["reason"] == "malformed_key"
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.json()["reason"] in ("store_unavailable", "audit_unavailable")
    assert response.headers["retry-after"] == "1"
    await store.close()


async def test_guard_recovers_after_the_connections_are_cut() -> None:
    async with temporary_schema() as (dsn, schema):
        store = PostgresStore(dsn, schema=schema)
        async with store:
            guard = Guard(store, rules=[RouteRule("/crm", service="crm")])
            user = await make_user(store, grants="crm:read")
            keys = await guard.issuer.issue(user.id, "ws-1")
            headers = {"Authorization": f"Bearer {keys.access_key.reveal()}"}
            transport = httpx.ASGITransport(app=build_app(guard))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/crm/contacts", headers=headers)).status_code == 200
                admin = await asyncpg.connect(dsn)
                try:
                    await admin.execute(  # only this store's connections: they name its schema
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND query LIKE $1",
                        f"%{schema}%",
                    )
                finally:
                    await admin.close()
                statuses = [
                    (await client.get("/crm/contacts", headers=headers)).status_code
                    for _ in range(3)
                ]
            assert statuses[-1] == 200
            assert set(statuses) <= {200, 503}  # at worst a refusal while reconnecting
            entries = await store.read()
            decisions = [
                e.event()["decision"] for e in entries if e.event()["action"] == "guard.decision"
            ]
            assert decisions.count("allow") == 1 + statuses.count(200)
