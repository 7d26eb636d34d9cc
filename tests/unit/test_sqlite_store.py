"""SQLiteStore beyond the shared contracts: files, schema versions, exact times, sharing."""

from __future__ import annotations

import sqlite3
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import CredentialOwner, CredentialScope, Grants, KeyKind, StoredCredential
from agentguard.audit import Action, AuditEvent, verify_chain
from agentguard.storage import IntegrityError, StorageError
from agentguard.storage._sqlite import SCHEMA_VERSION, SchemaVersionError, SQLiteStore
from agentguard.storage._sqlite._rows import from_micros, micros
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory

pytestmark = pytest.mark.anyio


def event(clock: FakeClock, n: int) -> AuditEvent:
    return AuditEvent(action=Action.KEY_ISSUE, ts=clock.now(), key_id=f"key_{n}", user_id="u1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agentguard.db"


async def test_reopened_store_keeps_directory_keys_and_audit_bytes(
    db: Path, clock: FakeClock
) -> None:
    record = key_record(clock, kind=KeyKind.REFRESH, scope=Grants({"crm": "read"}))
    async with SQLiteStore(db, clock=clock) as store:
        await seed_directory(store)
        await store.insert_keys([record])
        written = await store.append([event(clock, n) for n in range(5)])
        users = await store.list_users()
    async with SQLiteStore(db, clock=clock) as reopened:
        found = await reopened.lookup(record.key_hash)
        assert found is not None
        assert found.key == record
        assert found.member is True
        assert await reopened.list_users() == users
        entries = await reopened.read()
        assert entries == written
        assert [e.body for e in entries] == [e.body for e in written]
        assert [e.hash for e in entries] == [e.hash for e in written]
        more = await reopened.append([event(clock, 5)])
        assert more[0].seq == 5
        assert verify_chain(await reopened.read()) is None


async def test_newer_schema_version_is_refused(db: Path) -> None:
    async with SQLiteStore(db):
        pass
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    connection.close()
    store = SQLiteStore(db)
    with pytest.raises(SchemaVersionError, match=r"schema version 99.*upgrade agentguard"):
        await store.initialize()
    await store.close()


async def test_fresh_database_records_schema_version(db: Path) -> None:
    async with SQLiteStore(db):
        pass
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


@pytest.fixture
def garbage(db: Path) -> Path:
    db.write_bytes(b"this is not sqlite" * 100)
    return db


async def test_not_a_database_is_a_storage_error_caused_by_the_driver(garbage: Path) -> None:
    store = SQLiteStore(garbage)
    with pytest.raises(StorageError) as raised:
        await store.initialize()
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    await store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_new_database_file_is_private(db: Path) -> None:
    anyio.run(SQLiteStore(db).close)  # closing an unopened store creates nothing
    assert not db.exists()
    store = SQLiteStore(db)
    anyio.run(store.initialize)
    anyio.run(store.close)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


async def test_datetimes_round_trip_exactly(db: Path, clock: FakeClock) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=india)
    record = key_record(clock).model_copy(
        update={
            "created_at": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
            "expires_at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        }
    )
    async with SQLiteStore(db, clock=clock) as store:
        await seed_directory(store)
        await store.insert_keys([record])
        await store.revoke(key_id=record.id, reason="r", now=created)
        found = await store.lookup(record.key_hash)
    assert found is not None
    assert found.key.created_at == record.created_at
    assert found.key.expires_at == record.expires_at
    assert found.key.revoked_at == created
    assert found.key.revoked_at.tzinfo is timezone.utc
    assert found.key.revoked_at.microsecond == 123456


fixed_offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.just(timezone.utc) | fixed_offsets,
    )
)
def test_micros_round_trip(moment: datetime) -> None:
    assert from_micros(micros(moment)) == moment


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        micros(datetime(2026, 1, 1))


async def test_revocation_on_one_instance_is_seen_by_another(db: Path, clock: FakeClock) -> None:
    record = key_record(clock)
    async with SQLiteStore(db, clock=clock) as a, SQLiteStore(db, clock=clock) as b:
        await seed_directory(a)
        await a.insert_keys([record])
        seen = await b.lookup(record.key_hash)
        assert seen is not None and not seen.key.revoked
        assert await a.revoke(key_id=record.id, reason="stolen", now=clock.now()) == 1
        seen = await b.lookup(record.key_hash)
        assert seen is not None and seen.key.revoked_reason == "stolen"
        await b.set_membership("u1", "w1", member=False)
        seen = await a.lookup(record.key_hash)
        assert seen is not None and seen.member is False


async def test_replay_claim_on_one_instance_blocks_another(db: Path, clock: FakeClock) -> None:
    until = clock.now() + timedelta(seconds=30)
    async with SQLiteStore(db, clock=clock) as a, SQLiteStore(db, clock=clock) as b:
        assert await a.check_and_store(b"jti", until) is True
        assert await b.check_and_store(b"jti", until) is False
        clock.advance(31)
        assert await b.check_and_store(b"jti", clock.now() + timedelta(seconds=30)) is True


async def test_expired_replay_entries_are_purged(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        for n in range(10):
            await store.check_and_store(b"old-%d" % n, clock.now() + timedelta(seconds=1))
        clock.advance(2)
        await store.check_and_store(b"new", clock.now() + timedelta(seconds=1))
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("SELECT key FROM replay").fetchall() == [(b"new",)]
    finally:
        connection.close()


async def test_lookup_is_one_statement(db: Path, clock: FakeClock) -> None:
    record = key_record(clock)
    async with SQLiteStore(db, clock=clock) as store:
        await seed_directory(store)
        await store.insert_keys([record])
        statements: list[str] = []
        # Reaching into the connection is the only way to count what the driver runs.
        connection = store._connection
        assert connection is not None
        connection.set_trace_callback(statements.append)
        assert await store.lookup(record.key_hash) is not None
        connection.set_trace_callback(None)
    assert len(statements) == 1
    assert "LEFT JOIN memberships" in statements[0]


async def test_lookup_reports_missing_owner_records_as_none(clock: FakeClock) -> None:
    record = key_record(clock, user_id="ghost", account_id="gone")
    async with SQLiteStore(":memory:", clock=clock) as store:
        await store.insert_keys([record])
        found = await store.lookup(record.key_hash)
    assert found is not None
    assert (found.user, found.account, found.member) == (None, None, False)


async def test_list_keys_is_insertion_order(clock: FakeClock) -> None:
    records = [key_record(clock) for _ in range(5)]
    async with SQLiteStore(":memory:", clock=clock) as store:
        await seed_directory(store)
        for record in reversed(records):
            await store.insert_keys([record])
        await store.revoke(key_id=records[2].id, reason="r", now=clock.now())
        assert [k.id for k in await store.list_keys()] == [r.id for r in reversed(records)]


async def test_audit_rows_cannot_be_changed_or_forked(db: Path, clock: FakeClock) -> None:
    async with SQLiteStore(db, clock=clock) as store:
        entries = await store.append([event(clock, n) for n in range(3)])
    connection = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("UPDATE audit SET body = x'00' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM audit WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="does not extend"):
            connection.execute(
                "INSERT INTO audit (seq, prev, hash, body) VALUES (4, ?, x'00', x'00')",
                (entries[2].hash,),
            )
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(
                "INSERT INTO audit (seq, prev, hash, body) VALUES (2, ?, x'00', x'00')",
                (entries[1].hash,),
            )
    finally:
        connection.close()


async def test_driver_integrity_errors_become_storage_integrity_errors(clock: FakeClock) -> None:
    record = key_record(clock)
    async with SQLiteStore(":memory:", clock=clock) as store:
        await seed_directory(store)
        await store.insert_keys([record])
        with pytest.raises(IntegrityError, match="duplicate key") as caught:
            await store.insert_keys([record])
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
        fresh = key_record(clock, kind=KeyKind.REFRESH)
        await store.insert_keys([fresh])
        with pytest.raises(IntegrityError):
            await store.rotate(fresh.id, [record], now=clock.now())
        after = await store.lookup(fresh.key_hash)
        assert after is not None and after.key.used_at is None


async def test_credentials_keep_ciphertext_bytes(clock: FakeClock) -> None:
    credential = StoredCredential(
        id="c1",
        service="crm",
        owner_kind=CredentialOwner.ACCOUNT,
        owner_id="a1",
        scope=CredentialScope.ADMIN,
        ciphertext=bytes(range(256)),
        key_id="kek-1",
        created_at=clock.now(),
    )
    async with SQLiteStore(":memory:", clock=clock) as store:
        await store.put_credential(credential)
        assert await store.get_credential("crm", CredentialOwner.ACCOUNT, "a1") == credential


async def test_closed_store_refuses_calls(clock: FakeClock) -> None:
    store = SQLiteStore(":memory:", clock=clock)
    await store.initialize()
    await store.initialize()
    await store.close()
    await store.close()
    with pytest.raises(StorageError, match="closed"):
        await store.get_user("u1")


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        SQLiteStore(":memory:", timeout=-1)
