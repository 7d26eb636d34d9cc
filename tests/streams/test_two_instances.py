"""Revoke on instance A, and a stream held on instance B ends within the deadline: PostgreSQL
(LISTEN/NOTIFY triggers), SQLite (data_version), Redis pub/sub. B's interval is an hour, so
only the revocation event can cut in time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from agentguard import Guard
from agentguard.config import StreamSettings
from agentguard.storage import PostgresStore, SQLiteStore
from agentguard.storage._postgres._notify import channel_for, install_notify
from agentguard.storage._revocation_feeds import announce_changes
from agentguard.storage._revocation_feeds._postgres import APPLICATION
from agentguard.testing import make_user
from tests.backends.services import random_name, redis_url, temporary_schema
from tests.streams.instances import CHANGES, Pair, close_all, cut_after
from tests.streams.support import eventually

pytestmark = pytest.mark.anyio

QUIET: dict[str, Any] = {"recheck_interval": 3600.0, "linger": 0.0}  # only events cut in time


async def pair_over(store_a: object, store_b: object, settings_b: StreamSettings) -> Pair:
    a = Guard(store_a, streams=StreamSettings(events="off"))  # type: ignore[arg-type]
    b = Guard(store_b, streams=settings_b)  # type: ignore[arg-type]
    user = await make_user(a.store)
    keys = await a.issuer.issue(user.id, "ws-1")
    return Pair(a, b, user, keys)


@pytest.fixture
async def postgres() -> AsyncIterator[tuple[Pair, str, str]]:
    async with temporary_schema() as (dsn, schema):
        store_a = PostgresStore(dsn, schema=schema)
        store_b = PostgresStore(dsn, schema=schema)
        await store_a.initialize()
        await store_b.initialize()
        connection = await asyncpg.connect(dsn)
        try:
            await install_notify(connection, schema)  # what schema.py's migration will run
        finally:
            await connection.close()
        pair = await pair_over(store_a, store_b, StreamSettings(**QUIET))
        try:
            yield pair, dsn, schema
        finally:
            await close_all(pair.b, store_a, store_b)


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Pair]:
    path = tmp_path / "shared.db"
    store_a, store_b = SQLiteStore(path), SQLiteStore(path)
    await store_a.initialize()
    await store_b.initialize()
    pair = await pair_over(store_a, store_b, StreamSettings(poll_interval=0.05, **QUIET))
    try:
        yield pair
    finally:
        await close_all(pair.b, store_a, store_b)


@pytest.fixture
async def redis_bus(tmp_path: Path) -> AsyncIterator[Pair]:
    url, channel = await redis_url(), random_name("agentguard:test:revocations")
    path = tmp_path / "shared.db"
    plain_a, store_b = SQLiteStore(path), SQLiteStore(path)
    await plain_a.initialize()
    await store_b.initialize()
    store_a = announce_changes(plain_a, url, channel=channel)
    settings = StreamSettings(events=url, channel=channel, **QUIET)  # Redis, not data_version
    pair = await pair_over(store_a, store_b, settings)
    try:
        yield pair
    finally:
        await close_all(pair.b, store_a, store_b)


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_postgres_notify_cuts_a_stream_on_the_other_instance(
    postgres: tuple[Pair, str, str], change: str
) -> None:
    pair, _, _ = postgres
    await pair.listening()
    act, reason = CHANGES[change]
    error, _ = await cut_after(pair, act)
    assert error.reason.value == reason
    assert error.status == 401


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_sqlite_data_version_cuts_a_stream_on_the_other_instance(
    sqlite: Pair, change: str
) -> None:
    await sqlite.listening()
    act, reason = CHANGES[change]
    error, _ = await cut_after(sqlite, act)
    assert error.reason.value == reason


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_redis_announcements_cut_a_stream_on_the_other_instance(
    redis_bus: Pair, change: str
) -> None:
    await redis_bus.listening()
    act, reason = CHANGES[change]
    error, _ = await cut_after(redis_bus, act)
    assert error.reason.value == reason


async def test_the_postgres_listener_reconnects_and_still_cuts(
    postgres: tuple[Pair, str, str],
) -> None:
    pair, dsn, schema = postgres
    await pair.listening()
    admin = await asyncpg.connect(dsn)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND query LIKE '%' || $2 || '%'",
            APPLICATION,
            channel_for(schema),
        )
    finally:
        await admin.close()
    assert killed == 1
    await eventually(lambda: not pair.b.streams.listening())
    await pair.listening()  # back after the backoff
    error, _ = await cut_after(pair, CHANGES["revoke_key"][0])
    assert error.reason.value == "revoked"


async def test_a_notification_without_a_matching_stream_cuts_nothing(
    postgres: tuple[Pair, str, str],
) -> None:
    pair, _, _ = postgres
    await pair.listening()
    other = await make_user(pair.a.store, user_id="user-2")
    principal = await pair.principal()
    async with pair.b.streams.hold(principal, key=pair.key) as lease:
        await pair.a.store.put_user(other.model_copy(update={"enabled": False}))
        with anyio.move_on_after(0.5):
            await lease.wait()
        assert not lease.is_cut
