"""Two PostgresStore instances on one database behave as one store: nothing is cached."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from agentguard.audit import verify_log
from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.model import KeyKind
from agentguard.storage.postgres import PostgresStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory

pytestmark = pytest.mark.anyio

Stores = tuple[PostgresStore, PostgresStore]


def _event(clock: FakeClock, path: str) -> AuditEvent:
    return AuditEvent(
        action=Action.DECISION,
        ts=clock.now(),
        decision=Decision.ALLOW,
        method="GET",
        path=path,
        service="crm",
        user_id="u1",
    )


async def test_revocation_on_one_instance_is_seen_by_the_other(
    two_stores: Stores, clock: FakeClock
) -> None:
    a, b = two_stores
    await seed_directory(a)
    record = key_record(clock)
    await a.insert_keys([record])
    before = await b.lookup(record.key_hash)
    assert before is not None and before.key.revoked_at is None
    assert await a.revoke(key_id=record.id, reason="leaked", now=clock.now()) == 1
    after = await b.lookup(record.key_hash)
    assert after is not None and after.key.revoked_at == clock.now()
    await a.set_membership("u1", "w1", member=False)
    removed = await b.lookup(record.key_hash)
    assert removed is not None and removed.member is False


async def test_concurrent_rotation_across_instances_has_one_winner(
    two_stores: Stores, clock: FakeClock
) -> None:
    a, b = two_stores
    await seed_directory(a)
    refresh = key_record(clock, kind=KeyKind.REFRESH)
    await a.insert_keys([refresh])
    candidates = [[key_record(clock, family_id=refresh.family_id)] for _ in range(30)]
    results = [False] * len(candidates)

    async def attempt(index: int) -> None:
        store = a if index % 2 else b
        results[index] = await store.rotate(refresh.id, candidates[index], now=clock.now())

    async with anyio.create_task_group() as group:
        for index in range(len(candidates)):
            group.start_soon(attempt, index)
    assert results.count(True) == 1
    inserted = [await a.lookup(c[0].key_hash) is not None for c in candidates]
    assert inserted == results


async def test_concurrent_appends_from_two_instances_form_one_verified_chain(
    two_stores: Stores, clock: FakeClock
) -> None:
    a, b = two_stores

    async def writer(store: PostgresStore, name: str) -> None:
        for i in range(25):
            await store.append([_event(clock, f"/{name}/{i}")])

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(writer, a, f"a{n}")
            group.start_soon(writer, b, f"b{n}")
    entries = await b.read()
    assert [e.seq for e in entries] == list(range(200))
    report = verify_log(entries)
    assert report.ok, report.first
    assert await a.head() == entries[-1]
    paths = sorted(str(e.event()["path"]) for e in entries)
    assert paths == sorted(f"/{w}{n}/{i}" for w in "ab" for n in range(4) for i in range(25))


async def test_replay_claim_on_one_instance_blocks_the_other(
    two_stores: Stores, clock: FakeClock
) -> None:
    a, b = two_stores
    until = clock.now() + timedelta(minutes=1)
    assert await a.check_and_store(b"jti-shared", until) is True
    assert await b.check_and_store(b"jti-shared", until) is False
