"""The row-level security example: user A's agent cannot reach user B's rows by any route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from agentguard.storage import PostgresStore
from agentguard.testing import make_user
from examples.rls_app import create_app, install_schema
from tests.backends.services import postgres_dsn, random_name

pytestmark = pytest.mark.anyio


@dataclass
class World:
    client: httpx.AsyncClient
    alice: dict[str, str]
    bob: dict[str, str]
    bob_row: int


@pytest.fixture
async def world() -> AsyncIterator[World]:
    dsn = await postgres_dsn()
    schema, role = random_name("rls_example"), random_name("rls_role")
    admin = await asyncpg.connect(dsn)
    await install_schema(admin, schema, role)
    pool: Any = None
    try:
        app, guard, pool = await create_app(dsn, schema=schema, role=role)
        store = guard.store
        assert isinstance(store, PostgresStore)
        keys = {}
        for user_id in ("alice", "bob"):
            user = await make_user(guard.store, user_id=user_id, grants="crm:write")
            issued = await guard.issuer.issue(user.id, "ws-1")
            keys[user_id] = {"Authorization": f"Bearer {issued.access_key.reveal()}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rls.test") as client:
            for user_id, names in (("alice", ["Ada", "Alan"]), ("bob", ["Barbara"])):
                for name in names:
                    created = await client.post(
                        "/crm/contacts",
                        json={"owner_id": user_id, "name": name},
                        headers=keys[user_id],
                    )
                    assert created.status_code == 201
            bob_row = (await client.get("/crm/contacts", headers=keys["bob"])).json()[0]["id"]
            yield World(client, keys["alice"], keys["bob"], bob_row)
        await store.close()
    finally:
        if pool is not None:
            await pool.close()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema}_keys CASCADE")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_broad_select_returns_only_the_callers_rows(world: World) -> None:
    alice = (await world.client.get("/crm/contacts", headers=world.alice)).json()
    assert [row["name"] for row in alice] == ["Ada", "Alan"]
    assert {row["owner_id"] for row in alice} == {"alice"}


async def test_a_crafted_filter_for_someone_elses_rows_finds_nothing(world: World) -> None:
    crafted = await world.client.get(
        "/crm/contacts", params={"owner_id": "bob"}, headers=world.alice
    )
    assert crafted.json() == []


async def test_update_and_delete_of_someone_elses_row_affect_nothing(world: World) -> None:
    path = f"/crm/contacts/{world.bob_row}"
    updated = await world.client.patch(path, json={"name": "pwned"}, headers=world.alice)
    deleted = await world.client.delete(path, headers=world.alice)
    assert updated.json() == {"affected": 0}
    assert deleted.json() == {"affected": 0}
    bob = (await world.client.get("/crm/contacts", headers=world.bob)).json()
    assert [row["name"] for row in bob] == ["Barbara"]


async def test_writing_a_row_owned_by_someone_else_is_refused(world: World) -> None:
    planted = await world.client.post(
        "/crm/contacts", json={"owner_id": "bob", "name": "planted"}, headers=world.alice
    )
    assert planted.status_code == 403
    bob = (await world.client.get("/crm/contacts", headers=world.bob)).json()
    assert [row["name"] for row in bob] == ["Barbara"]


async def test_the_owner_can_still_change_its_own_rows(world: World) -> None:
    own = (await world.client.get("/crm/contacts", headers=world.bob)).json()[0]["id"]
    updated = await world.client.patch(
        f"/crm/contacts/{own}", json={"name": "Barb"}, headers=world.bob
    )
    assert updated.json() == {"affected": 1}
