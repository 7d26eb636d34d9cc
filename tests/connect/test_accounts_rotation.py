"""Key rotation and connected accounts: ``ConnectedAccounts.reseal`` moves every connection under
the primary key (compare-and-set per row, a lost race retried), and a connection that does not
open (its key dropped, a tampered row) is refused 403 ``connection_broken`` with the connect
link, audited, never a 502 the user cannot get out of. Security review of issue 21, finding 2.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentguard._model import ConnectedAccount, ConnectionStatus
from agentguard._secret import Secret
from agentguard.audit._writer import AuditWriter
from agentguard.connect import ConnectedAccounts, ConnectionRequired
from agentguard.credentials import CredentialVault, KeyRing
from agentguard.errors import Reason
from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore
from agentguard.testing import FakeClock
from tests.backends.services import temporary_schema
from tests.connect.accounts_fakes import DictStore, StubVendor, principal, token, tokens_for

pytestmark = pytest.mark.anyio

CONNECT = "https://gw.example/connect/crm"
OLD = os.urandom(32)
NEW = os.urandom(32)


def ring(*ids: str) -> KeyRing:
    keys = {"kek-1": OLD, "kek-2": NEW}
    return KeyRing({key_id: keys[key_id] for key_id in ids}, ids[0])


class Rotation:
    def __init__(self, store: DictStore | None = None) -> None:
        self.clock = FakeClock()
        self.store = store if store is not None else DictStore()
        self.audit_store = MemoryStore(clock=self.clock)
        self.vendor = StubVendor(self.clock)

    def accounts(self, keyring: KeyRing) -> ConnectedAccounts:
        return ConnectedAccounts(
            self.store,
            keyring,
            {"crm": self.vendor},
            clock=self.clock,
            audit=AuditWriter(self.audit_store),
            connect_uri=lambda service: f"https://gw.example/connect/{service}",
        )

    async def events(self) -> list[dict[str, Any]]:
        return [entry.event() for entry in await self.audit_store.read()]


async def test_reseal_moves_a_connection_that_is_never_refreshed_under_the_new_key() -> None:
    """The reviewer's PoC: rotate, then drop the old key; a connection without expiry (never
    refreshed, so never re-sealed on its own) must still work."""
    rotation = Rotation()
    tokens = tokens_for(rotation.clock, lifetime=None)
    before = await rotation.accounts(ring("kek-1")).connect("crm", "alice", tokens)
    report = await rotation.accounts(ring("kek-2", "kek-1")).reseal()
    assert (report.rewritten, report.unopenable, report.busy) == (1, [], [])
    assert report.complete
    after = rotation.accounts(ring("kek-2"))
    row = rotation.store.rows[("crm", "alice")]
    assert (row.key_id, row.version, row.id) == ("kek-2", before.version + 1, before.id)
    assert (row.updated_at, row.expires_at, row.scopes) == (
        before.updated_at, before.expires_at, before.scopes,
    )  # fmt: skip
    got = await after.token_for(principal("alice", rotation.clock), "crm")
    assert got == tokens.access_token
    assert after.sealer.open(row, "refresh") == tokens.refresh_token
    assert rotation.vendor.presented == []  # nothing was renewed to get there


async def test_reseal_is_idempotent_and_audited() -> None:
    rotation = Rotation()
    for user in ("alice", "bob"):
        await rotation.accounts(ring("kek-1")).connect("crm", user, tokens_for(rotation.clock))
    both = rotation.accounts(ring("kek-2", "kek-1"))
    counted: list[int] = []
    assert (await both.reseal(progress=counted.append)).rewritten == 2
    assert counted == [1, 2]
    versions = {key: row.version for key, row in rotation.store.rows.items()}
    again = await both.reseal()
    assert (again.rewritten, again.complete) == (0, True)
    assert {key: row.version for key, row in rotation.store.rows.items()} == versions
    rekeys = [e for e in await rotation.events() if e["action"] == "credential.rekey"]
    assert [e["detail"] for e in rekeys] == [{"connections": 2, "kek": "kek-2"}]


async def test_a_broken_connection_moves_its_key_id_only() -> None:
    rotation = Rotation()
    record = await rotation.accounts(ring("kek-1")).connect(
        "crm", "alice", tokens_for(rotation.clock)
    )
    broken = record.model_copy(
        update={"status": ConnectionStatus.BROKEN, "access_token": b"", "refresh_token": None}
    )
    rotation.store.rows[("crm", "alice")] = broken
    assert (await rotation.accounts(ring("kek-2", "kek-1")).reseal()).rewritten == 1
    row = rotation.store.rows[("crm", "alice")]
    assert (row.key_id, row.status, row.access_token) == ("kek-2", ConnectionStatus.BROKEN, b"")
    with pytest.raises(ConnectionRequired) as refused:
        await rotation.accounts(ring("kek-2")).token_for(principal("alice", rotation.clock), "crm")
    assert refused.value.reason is Reason.CONNECTION_BROKEN


async def test_a_row_that_does_not_open_is_named_left_alone_and_the_rest_moved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rotation = Rotation()
    old = rotation.accounts(ring("kek-1"))
    tampered = await old.connect("crm", "alice", tokens_for(rotation.clock))
    await old.connect("crm", "bob", tokens_for(rotation.clock))
    edited = tampered.model_copy(update={"created_at": tampered.created_at + timedelta(1)})
    rotation.store.rows[("crm", "alice")] = edited
    with caplog.at_level(logging.ERROR, "agentguard.connect"):
        report = await rotation.accounts(ring("kek-2", "kek-1")).reseal()
    assert (report.rewritten, report.unopenable, report.complete) == (1, [tampered.id], False)
    assert rotation.store.rows[("crm", "alice")] == edited  # untouched
    assert rotation.store.rows[("crm", "bob")].key_id == "kek-2"
    assert tampered.id in caplog.text and "does_not_decrypt" in caplog.text
    [rekey] = [e for e in await rotation.events() if e["action"] == "credential.rekey"]
    assert rekey["detail"] == {"connections": 1, "kek": "kek-2", "unopenable": 1}


class RacingStore(DictStore):
    """Runs ``before_update`` (another writer) ahead of the first compare-and-set."""

    def __init__(self) -> None:
        super().__init__()
        self.before_update: Callable[[], Awaitable[None]] | None = None
        self.attempts = 0

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        self.attempts += 1
        if self.before_update is not None:
            race, self.before_update = self.before_update, None
            await race()
        return await super().update_connection(record, version=version)


async def test_a_renewal_racing_the_reseal_wins_and_the_row_is_moved_after_it() -> None:
    store = RacingStore()
    rotation = Rotation(store)
    old = rotation.accounts(ring("kek-1"))
    await old.connect("crm", "alice", tokens_for(rotation.clock))
    renewed_access = Secret(token("at"))
    renewed_refresh = Secret(token("rt"))

    async def renew_on_an_instance_with_the_old_ring() -> None:
        row = store.rows[("crm", "alice")]
        renewed = row.model_copy(update={"version": row.version + 1})
        store.rows[("crm", "alice")] = old.sealer.seal(renewed, renewed_access, renewed_refresh)

    store.before_update = renew_on_an_instance_with_the_old_ring
    new = rotation.accounts(ring("kek-2", "kek-1"))
    report = await new.reseal()
    assert (report.rewritten, store.attempts) == (1, 2)
    row = store.rows[("crm", "alice")]
    assert (row.key_id, row.version) == ("kek-2", 3)
    assert new.sealer.open(row, "access") == renewed_access  # the renewal's tokens, kept
    assert new.sealer.open(row, "refresh") == renewed_refresh


async def test_a_row_renewed_under_the_new_key_meanwhile_is_left_as_it_is() -> None:
    store = RacingStore()
    rotation = Rotation(store)
    await rotation.accounts(ring("kek-1")).connect("crm", "alice", tokens_for(rotation.clock))
    new = rotation.accounts(ring("kek-2", "kek-1"))

    async def renew_on_an_upgraded_instance() -> None:
        row = store.rows[("crm", "alice")]
        renewed = row.model_copy(update={"version": row.version + 1})
        store.rows[("crm", "alice")] = new.sealer.seal(renewed, Secret(token("at")), None)

    store.before_update = renew_on_an_upgraded_instance
    report = await new.reseal()
    assert (report.rewritten, report.complete, store.attempts) == (0, True, 1)
    assert store.rows[("crm", "alice")].version == 2


async def test_a_row_that_never_stops_changing_is_reported_busy() -> None:
    class Contended(DictStore):
        async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
            return False

    rotation = Rotation(Contended())
    record = await rotation.accounts(ring("kek-1")).connect(
        "crm", "alice", tokens_for(rotation.clock)
    )
    report = await rotation.accounts(ring("kek-2", "kek-1")).reseal()
    assert (report.rewritten, report.busy, report.complete) == (0, [record.id], False)


async def test_a_connection_disconnected_during_the_reseal_is_skipped() -> None:
    store = RacingStore()
    rotation = Rotation(store)
    await rotation.accounts(ring("kek-1")).connect("crm", "alice", tokens_for(rotation.clock))

    async def disconnect() -> None:
        del store.rows[("crm", "alice")]

    store.before_update = disconnect
    report = await rotation.accounts(ring("kek-2", "kek-1")).reseal()
    assert (report.rewritten, report.complete, store.rows) == (0, True, {})


# A connection whose key was dropped: refused connection_broken, mended by a reconnect.


@pytest.mark.parametrize("due", [False, True], ids=["fresh", "due-for-renewal"])
async def test_a_dropped_key_is_connection_broken_with_the_link_and_audited(due: bool) -> None:
    rotation = Rotation()
    record = await rotation.accounts(ring("kek-1")).connect(
        "crm", "alice", tokens_for(rotation.clock)
    )
    if due:
        rotation.clock.advance(3600 - 10)
    accounts = rotation.accounts(ring("kek-2"))  # the old key dropped without a reseal
    with pytest.raises(ConnectionRequired) as refused:
        await accounts.token_for(principal("alice", rotation.clock), "crm")
    assert refused.value.status == 403
    assert refused.value.reason is Reason.CONNECTION_BROKEN
    assert refused.value.body()["connect_uri"] == CONNECT
    assert "vendor refused" not in refused.value.description
    assert rotation.vendor.presented == []
    assert rotation.store.leases == {}
    event = (await rotation.events())[-1]
    assert (event["action"], event["decision"], event["reason"]) == (
        "connection.broken", "deny", "connection_broken",
    )  # fmt: skip
    assert event["detail"] == {
        "connection_id": record.id, "error": "unopenable", "cause": "key_missing",
    }  # fmt: skip
    tokens = tokens_for(rotation.clock)
    await accounts.connect("crm", "alice", tokens)  # the user reconnects
    got = await accounts.token_for(principal("alice", rotation.clock), "crm")
    assert got == tokens.access_token


async def test_the_pocs_vault_and_connections_rotation_on_a_memory_store() -> None:
    """The reviewer's PoC as an operator runs it: the vault's reseal and the connections'."""
    store = MemoryStore()
    clock = FakeClock()
    vendor = StubVendor(clock)
    first = ConnectedAccounts(store, ring("kek-1"), {"crm": vendor}, clock=clock)
    await first.connect("crm", "alice", tokens_for(clock, lifetime=None))
    both = ring("kek-2", "kek-1")
    await CredentialVault(store, both).reseal({})
    await ConnectedAccounts(store, both, {"crm": vendor}, clock=clock).reseal()
    after = ConnectedAccounts(store, ring("kek-2"), {"crm": vendor}, clock=clock)
    stored = await store.get_connection("crm", "alice")
    assert stored is not None and stored.key_id == "kek-2"
    await after.token_for(principal("alice", clock), "crm")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_reseal_on_the_shipped_stores(backend: str, tmp_path: Path) -> None:
    clock = FakeClock()
    vendor = StubVendor(clock)

    async def rotate(store: Any) -> None:
        tokens = tokens_for(clock, lifetime=None)
        await ConnectedAccounts(store, ring("kek-1"), {"crm": vendor}, clock=clock).connect(
            "crm", "alice", tokens
        )
        both = ConnectedAccounts(store, ring("kek-2", "kek-1"), {"crm": vendor}, clock=clock)
        assert (await both.reseal()).rewritten == 1
        after = ConnectedAccounts(store, ring("kek-2"), {"crm": vendor}, clock=clock)
        assert await after.token_for(principal("alice", clock), "crm") == tokens.access_token

    if backend == "sqlite":
        async with SQLiteStore(tmp_path / "rotation.db", clock=clock) as store:
            await rotate(store)
    else:
        async with AsyncExitStack() as stack:
            dsn, schema = await stack.enter_async_context(temporary_schema())
            postgres = PostgresStore(dsn, schema=schema, clock=clock)
            await rotate(await stack.enter_async_context(postgres))
