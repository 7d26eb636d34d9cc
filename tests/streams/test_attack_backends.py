"""Attacking the live streams over real PostgreSQL and Redis: a store that hangs on a lock,
notification payloads built from ids a writer controls, events lost while a feed reconnects.

``LOCK TABLE keys IN ACCESS EXCLUSIVE MODE`` held by another session makes every key
look-up wait (until the store's ``command_timeout``) rather than fail: the registry must
count that as an outage within its bound, for every stream at once, not one timeout per
batch of look-ups.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from agentguard import Guard
from agentguard.config import StreamSettings
from agentguard.errors import StoreUnavailable
from agentguard.storage import PostgresStore, SQLiteStore
from agentguard.storage._revocation_feeds import Change, announce_changes
from agentguard.storage._revocation_feeds._postgres import PostgresFeed
from agentguard.testing import make_user
from tests.backends.services import random_name, redis_url, temporary_schema
from tests.streams.instances import Pair, close_all, revoke_key
from tests.streams.support import DEADLINE, cut_within

pytestmark = pytest.mark.anyio


@pytest.fixture
async def postgres() -> AsyncIterator[tuple[PostgresStore, str, str]]:
    async with temporary_schema() as (dsn, schema):
        store = PostgresStore(dsn, schema=schema)
        await store.initialize()
        try:
            yield store, dsn, schema
        finally:
            await store.close()


async def test_a_locked_keys_table_cuts_every_stream_within_one_bound(
    postgres: tuple[PostgresStore, str, str],
) -> None:
    store, dsn, schema = postgres
    settings = StreamSettings(
        events="off", recheck_interval=0.5, outage_grace=0.0, max_concurrency=2, linger=0.0
    )
    guard = Guard(store, streams=settings)
    user = await make_user(store)
    locker = await asyncpg.connect(dsn)
    try:
        async with contextlib.AsyncExitStack() as stack:
            leases = []
            for _ in range(12):
                key = (await guard.issuer.issue(user.id, "ws-1")).access_key.reveal()
                principal = await guard.resolve(key)
                leases.append(
                    await stack.enter_async_context(guard.streams.hold(principal, key=key))
                )
            async with locker.transaction():
                await locker.execute(f'LOCK TABLE "{schema}".keys IN ACCESS EXCLUSIVE MODE')
                started = time.monotonic()
                with anyio.fail_after(DEADLINE):
                    assert await guard.streams.recheck() == len(leases)
                elapsed = time.monotonic() - started
            assert all(isinstance(lease.error, StoreUnavailable) for lease in leases)
            assert elapsed < 2.5  # one bound (1 s here), not six batches of command_timeout
    finally:
        await locker.close()
        await guard.streams.aclose()


CRAFTED = ['o"ne', "two\\", "x'); DROP TABLE keys; --", '{"user_id":"victim"}', "é\u2028\U0001f600"]


async def _notified(
    dsn: str, schema: str, setup: list[str], change: str, *arguments: object
) -> list[Change]:
    """What the feed delivers for ``change`` (run after the ``setup`` statements)."""
    feed = PostgresFeed(dsn, schema)
    changes: list[Change] = []
    ready = anyio.Event()
    writer = await asyncpg.connect(dsn)
    try:
        for statement in setup:
            await writer.execute(statement.format(s=f'"{schema}"'), *arguments)
        async with anyio.create_task_group() as group:
            group.start_soon(feed.watch, changes.append, ready.set)
            with anyio.fail_after(DEADLINE):
                await ready.wait()
            await writer.execute(change.format(s=f'"{schema}"'), arguments[0])
            with anyio.fail_after(DEADLINE):
                while not changes:  # noqa: ASYNC110 - the feed's callback appends
                    await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    finally:
        await writer.close()
    return changes


_ADD_USER = (
    "INSERT INTO {s}.users (id, account_id, name, enabled, grants)"
    " VALUES ($1, $2, '', true, '{{}}')"
)


@pytest.mark.parametrize("user_id", CRAFTED)
async def test_a_notification_names_exactly_the_id_written_however_it_is_spelled(
    postgres: tuple[PostgresStore, str, str], user_id: str
) -> None:
    """Ids written by raw SQL (bypassing the model's id rules) reach the feed as exactly that
    id: the trigger builds JSON, never text, so no id can name another user or forge a
    field. (A membership removed: its row names the user.)"""
    store, dsn, schema = postgres
    account = (await make_user(store)).account_id
    setup = [
        _ADD_USER,
        "INSERT INTO {s}.memberships (user_id, workspace_id, account_id) VALUES ($1, 'ws-1', $2)",
    ]
    remove = "DELETE FROM {s}.memberships WHERE user_id = $1"
    changes = await _notified(dsn, schema, setup, remove, user_id, account)
    assert changes == [Change((("user_id", user_id),))]


async def test_a_user_change_names_that_user_not_everyone(
    postgres: tuple[PostgresStore, str, str],
) -> None:
    store, dsn, schema = postgres
    account = (await make_user(store)).account_id
    disable = "UPDATE {s}.users SET enabled = false WHERE id = $1"
    changes = await _notified(dsn, schema, [_ADD_USER], disable, "user-9", account)
    assert changes == [Change((("user_id", "user-9"),))]


# Events lost while a feed reconnects (Redis): the re-subscription re-checks every stream


@pytest.fixture
async def redis_pair(tmp_path: Path) -> AsyncIterator[Pair]:
    url, channel = await redis_url(), random_name("agentguard:test:revocations")
    path = tmp_path / "shared.db"
    plain_a, store_b = SQLiteStore(path), SQLiteStore(path)
    await plain_a.initialize()
    await store_b.initialize()
    store_a = announce_changes(plain_a, url, channel=channel)
    a = Guard(store_a, streams=StreamSettings(events="off"))
    settings = StreamSettings(events=url, channel=channel, recheck_interval=3600.0, linger=0.0)
    b = Guard(store_b, streams=settings)
    user = await make_user(a.store)
    pair = Pair(a, b, user, await a.issuer.issue(user.id, "ws-1"))
    try:
        yield pair
    finally:
        await close_all(pair.b, store_a, store_b)


async def test_a_revocation_announced_while_the_subscriber_is_cut_off_still_cuts(
    redis_pair: Pair,
) -> None:
    import redis.asyncio

    pair = redis_pair
    admin = redis.asyncio.Redis.from_url(await redis_url())

    async def subscribers() -> set[int]:
        listed = await admin.client_list(_type="pubsub")
        return {int(client["id"]) for client in listed}

    try:
        others = await subscribers()  # other tests' subscribers are left alone
        await pair.listening()
        principal = await pair.principal()
        async with pair.b.streams.hold(principal, key=pair.key) as lease:
            ours = await subscribers() - others
            assert ours
            for client in ours:
                await admin.client_kill_filter(_id=str(client))
            await revoke_key(pair)  # announced while B is not subscribed: the message is lost
            error = await cut_within(lease, DEADLINE * 2)  # the re-subscription re-checks
    finally:
        await admin.aclose()
    assert error.reason.value == "revoked"
