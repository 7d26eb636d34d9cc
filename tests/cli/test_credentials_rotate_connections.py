"""``agentguard credentials rotate-kek`` and ``reseal`` re-encrypt the users' connected accounts
too (security review of issue 21, finding 2): after rotating and dropping the old key a
connection still opens; one that does not open is named and the command exits 1, so the
operator does not drop a key something still needs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard._model import ConnectedAccount
from agentguard._secret import Secret
from agentguard.connect import ConnectedAccounts, VendorTokens
from agentguard.credentials import KeyRing
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from tests.cli.conftest import RunCLI
from tests.connect.accounts_fakes import StubVendor, principal, token
from tests.product.conftest import new_kek


@pytest.fixture
def work(cli: RunCLI, clean_env: Path) -> Path:
    result = cli("init", "--config", "agentguard.toml", "--no-kek")
    assert result.code == 0, result.err
    return clean_env


def _tokens() -> VendorTokens:
    return VendorTokens(Secret(token("at")), Secret(token("rt")), None, ("contacts.read",))


def _connect(work: Path, kek: str, user_id: str) -> tuple[ConnectedAccount, VendorTokens]:
    async def run() -> tuple[ConnectedAccount, VendorTokens]:
        tokens = _tokens()
        async with SQLiteStore(work / "agentguard.db") as store:
            accounts = ConnectedAccounts(store, KeyRing.from_string(kek), {})
            return await accounts.connect("crm", user_id, tokens), tokens

    return anyio.run(run)


def _token_for(work: Path, kek: str, user_id: str) -> Secret:
    async def run() -> Secret:
        clock = FakeClock()
        async with SQLiteStore(work / "agentguard.db") as store:
            accounts = ConnectedAccounts(
                store, KeyRing.from_string(kek), {"crm": StubVendor(clock)}, clock=clock
            )
            return await accounts.token_for(principal(user_id, clock), "crm")

    return anyio.run(run)


def _rows(work: Path) -> dict[str, ConnectedAccount]:
    async def run() -> list[ConnectedAccount]:
        async with SQLiteStore(work / "agentguard.db") as store:
            return await store.list_connections()

    return {row.user_id: row for row in anyio.run(run)}


def _tamper(work: Path, row: ConnectedAccount) -> None:
    async def run() -> None:
        async with SQLiteStore(work / "agentguard.db") as store:
            edited = row.model_copy(update={"created_at": row.created_at + timedelta(seconds=1)})
            await store.put_connection(edited)

    anyio.run(run)


def _rekeys(work: Path) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        async with SQLiteStore(work / "agentguard.db") as store:
            return [entry.event() for entry in await store.read()]

    return [e for e in anyio.run(run) if e["action"] == "credential.rekey"]


def test_rotate_kek_reencrypts_connections_so_the_old_key_can_be_dropped(
    cli: RunCLI, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_kek("kek-old"), new_kek("kek-new")
    _, alice = _connect(work, old, "alice")
    _, bob = _connect(work, old, "bob")
    monkeypatch.setenv("AGENTGUARD_KEK", f"{new},{old}")
    rotated = cli("credentials", "rotate-kek", "--json")
    assert rotated.code == 0, rotated.err
    assert json.loads(rotated.out) == {"reencrypted": 0, "connections": 2, "primary": "kek-new"}
    assert {row.key_id for row in _rows(work).values()} == {"kek-new"}
    assert _token_for(work, new, "alice") == alice.access_token  # the old key dropped
    assert _token_for(work, new, "bob") == bob.access_token
    assert [e["detail"] for e in _rekeys(work)] == [{"connections": 2, "kek": "kek-new"}]
    again = cli("credentials", "rotate-kek")
    assert again.code == 0, again.err
    assert again.out.strip() == "re-encrypted 0 credentials and 0 connections under kek-new"
    everything = rotated.out + rotated.err + again.out + again.err
    for value in (alice.access_token, alice.refresh_token, bob.access_token):
        assert value is not None and value.reveal() not in everything


def test_a_connection_that_does_not_open_is_named_and_the_command_exits_1(
    cli: RunCLI, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_kek("kek-old"), new_kek("kek-new")
    record, _ = _connect(work, old, "alice")
    _connect(work, old, "bob")
    _tamper(work, record)
    monkeypatch.setenv("AGENTGUARD_KEK", f"{new},{old}")
    rotated = cli("credentials", "rotate-kek")
    assert rotated.code == 1
    assert rotated.out.strip() == "re-encrypted 0 credentials and 1 connections under kek-new"
    line = rotated.one_line_error(1)
    assert record.id in line and "do not open" in line and "keep the old key" in line
    rows = _rows(work)
    assert (rows["alice"].key_id, rows["bob"].key_id) == ("kek-old", "kek-new")


def test_reseal_moves_connections_too(
    cli: RunCLI, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_kek("kek-old"), new_kek("kek-new")
    _, tokens = _connect(work, old, "alice")
    monkeypatch.setenv("AGENTGUARD_KEK", f"{new},{old}")
    resealed = cli("credentials", "reseal", "--no-input", "--json")
    assert resealed.code == 0, resealed.err
    assert json.loads(resealed.out)["connections"] == 1
    assert _token_for(work, new, "alice") == tokens.access_token
