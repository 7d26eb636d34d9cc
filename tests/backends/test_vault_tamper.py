"""Editing a credential row in real SQLite and PostgreSQL, without the key: always refused.

Someone with write access to the database but not the key-encryption key edits one column of
the ``credentials`` table with raw SQL. Every column that decides how the credential is used is
bound into the seal, so the vault refuses the row and the gateway answers 502 naming the
service, never 500, never the secret, and never calls the vendor. Columns edited: scope (both
ways), service, owner_kind, owner_id, id, key_id (to another configured key and to an unknown
one), created_at, and ciphertext (another row's, and a version downgrade). ``pos`` (the row's
insertion order) is the one column left unbound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentguard import CredentialOwner, CredentialScope, Guard, Placement, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing, VaultError
from agentguard.storage import PostgresStore, SQLiteStore
from agentguard.testing import FakeClock, FakeUpstream, make_user
from tests.backends.services import temporary_schema
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

ADMIN_KEY = "adm-live-" + "k" * 32
USER1_KEY = "u1-live-" + "m" * 32
USER2_KEY = "u2-live-" + "n" * 32
BILLING_KEY = "bil-live-" + "p" * 32
SECRETS = (ADMIN_KEY, USER1_KEY, USER2_KEY, BILLING_KEY)
USER, ACCOUNT = CredentialOwner.USER, CredentialOwner.ACCOUNT

# (service, owner kind, owner id, value, scope) of each row a case may store.
ROWS = {
    "admin": ("crm", ACCOUNT, "acct-1", ADMIN_KEY, CredentialScope.ADMIN),
    "own": ("crm", USER, "user-1", USER1_KEY, CredentialScope.USER),
    "other_user": ("crm", USER, "user-2", USER2_KEY, CredentialScope.USER),
    "other_service": ("billing", USER, "user-1", BILLING_KEY, CredentialScope.USER),
    "user_named_acct": ("crm", USER, "acct-1", USER2_KEY, CredentialScope.USER),
}


@dataclass(frozen=True)
class Case:
    """Rows to store, then one raw edit (``{t}`` is the table, ``:id`` the edited row's id)."""

    rows: tuple[str, ...]
    edited: str
    sqlite: str
    postgres: str
    slot: tuple[str, CredentialOwner, str]  # where the edited row now sits


def _same(
    sql: str, rows: tuple[str, ...], edited: str, slot: tuple[str, CredentialOwner, str]
) -> Case:
    return Case(rows, edited, sql, sql, slot)


CRM_USER1 = ("crm", USER, "user-1")
CRM_ACCT1 = ("crm", ACCOUNT, "acct-1")
CASES = {
    # The issue's attack: an admin credential made user-scoped would be sent for every user.
    "scope_admin_to_user": _same(
        "UPDATE {t} SET scope = 'user' WHERE id = :id", ("admin",), "admin", CRM_ACCT1
    ),
    "scope_user_to_admin": _same(
        "UPDATE {t} SET scope = 'admin' WHERE id = :id", ("own",), "own", CRM_USER1
    ),
    "service": _same(
        "UPDATE {t} SET service = 'crm' WHERE id = :id",
        ("other_service",),
        "other_service",
        CRM_USER1,
    ),
    "owner_id": _same(
        "UPDATE {t} SET owner_id = 'user-1' WHERE id = :id",
        ("other_user",),
        "other_user",
        CRM_USER1,
    ),
    "owner_kind": _same(
        "UPDATE {t} SET owner_kind = 'account' WHERE id = :id",
        ("user_named_acct",),
        "user_named_acct",
        CRM_ACCT1,
    ),
    "id": _same("UPDATE {t} SET id = 'cred_forged' WHERE id = :id", ("own",), "own", CRM_USER1),
    "key_id_other_key": _same(
        "UPDATE {t} SET key_id = 'kek-b' WHERE id = :id", ("own",), "own", CRM_USER1
    ),
    "key_id_unknown": _same(
        "UPDATE {t} SET key_id = 'kek-gone' WHERE id = :id", ("own",), "own", CRM_USER1
    ),
    "created_at": Case(
        ("own",),
        "own",
        "UPDATE {t} SET created_at = created_at + 1 WHERE id = :id",
        "UPDATE {t} SET created_at = created_at + interval '1 microsecond' WHERE id = :id",
        CRM_USER1,
    ),
    "ciphertext_of_another_row": _same(
        "UPDATE {t} SET ciphertext = (SELECT ciphertext FROM {t} WHERE owner_id = 'user-2') "
        "WHERE id = :id",
        ("own", "other_user"),
        "own",
        CRM_USER1,
    ),
    "ciphertext_downgraded_to_v1": Case(
        ("own",),
        "own",
        "UPDATE {t} SET ciphertext = CAST(X'01' || substr(ciphertext, 2) AS BLOB) WHERE id = :id",
        "UPDATE {t} SET ciphertext = set_byte(ciphertext, 0, 1) WHERE id = :id",
        CRM_USER1,
    ),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream("crm", header="x-api-key")
    with LoopbackServer(fake) as server:
        yield fake, server.url


Execute = Callable[[str, str], Awaitable[None]]


@dataclass
class Backend:
    store: SQLiteStore | PostgresStore
    kind: str
    execute: Execute  # (sql with {t} and :id, id)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "agentguard.db"

        async def run_sqlite(sql: str, cid: str) -> None:
            with sqlite3.connect(path) as raw:
                changed = raw.execute(sql.format(t="credentials"), {"id": cid}).rowcount
            raw.close()
            assert changed == 1

        async with SQLiteStore(path, clock=clock) as store:
            yield Backend(store, "sqlite", run_sqlite)
        return
    import asyncpg

    async with temporary_schema() as (dsn, schema):

        async def run_postgres(sql: str, cid: str) -> None:
            connection = await asyncpg.connect(dsn)
            try:
                status = await connection.execute(
                    sql.format(t=f'"{schema}".credentials').replace(":id", "$1"), cid
                )
            finally:
                await connection.close()
            assert status == "UPDATE 1"

        async with PostgresStore(dsn, clock=clock, schema=schema) as pg:
            yield Backend(pg, "postgres", run_postgres)


@dataclass
class Gateway:
    vault: CredentialVault
    guard: Guard
    client: httpx.AsyncClient
    key: str


@pytest.fixture
async def gateway(
    backend: Backend, clock: FakeClock, upstream: tuple[FakeUpstream, str]
) -> AsyncIterator[Gateway]:
    fake, url = upstream
    fake.requests.clear()
    ring = KeyRing({"kek-a": b"A" * 32, "kek-b": b"B" * 32}, "kek-a")
    vault = CredentialVault(backend.store, ring, clock=clock)
    crm = ServiceConfig(
        name="crm",
        base_url=url + "/v2",
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
    )
    swapper = CredentialSwapper(vault, clock=clock)
    guard = Guard(backend.store, clock=clock, services=[crm], swapper=swapper)
    user = await make_user(backend.store, grants="crm:read")
    await make_user(backend.store, user_id="user-2", grants="crm:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    app = ProxyApp(guard, "crm")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")
    try:
        yield Gateway(vault, guard, client, keys.access_key.reveal())
    finally:
        await client.aclose()
        await app.aclose()


async def _store(gateway: Gateway, names: tuple[str, ...]) -> dict[str, str]:
    ids = {}
    for name in names:
        service, kind, owner, value, scope = ROWS[name]
        ids[name] = (await gateway.vault.put(service, kind, owner, value, scope=scope)).id
    return ids


async def test_untouched_rows_are_swapped(
    gateway: Gateway, upstream: tuple[FakeUpstream, str]
) -> None:
    await _store(gateway, ("own", "admin"))
    response = await gateway.client.get("/contacts", headers={"X-Api-Key": gateway.key})
    assert response.status_code == 200, response.text
    assert upstream[0].requests[-1].header("x-api-key") == USER1_KEY


@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_raw_edit_of_a_bound_column_is_refused(
    backend: Backend, gateway: Gateway, upstream: tuple[FakeUpstream, str], name: str
) -> None:
    case = CASES[name]
    ids = await _store(gateway, case.rows)
    await backend.execute(getattr(case, backend.kind), ids[case.edited])
    with pytest.raises(VaultError) as refused:
        await gateway.vault.get(*case.slot)
    assert not any(secret in str(refused.value) for secret in SECRETS)

    response = await gateway.client.get("/contacts", headers={"X-Api-Key": gateway.key})
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["service"] == "crm" and body["reason"] == "credential_unavailable"
    seen = response.text + str(response.headers)
    assert not any(secret in seen for secret in SECRETS)
    assert upstream[0].requests == []  # the vendor was never called
    events = [entry.event() for entry in await backend.store.read()]
    denied = [e for e in events if e["action"] == "proxy.upstream"]
    assert denied[-1]["decision"] == "deny" and denied[-1]["status"] == 502
    assert denied[-1]["reason"] == "credential_unavailable"
    assert not any(secret in str(events) for secret in SECRETS)


# Edits that leave a column the store cannot even read back: a tampered row, not an outage.
UNREADABLE = {
    "scope_not_a_scope": _same(
        "UPDATE {t} SET scope = 'superuser' WHERE id = :id", ("admin",), "admin", CRM_ACCT1
    ),
    "scope_upper_case": _same(
        "UPDATE {t} SET scope = 'USER' WHERE id = :id", ("admin",), "admin", CRM_ACCT1
    ),
    "owner_kind_not_a_kind": Case(
        ("own",),
        "own",
        "UPDATE {t} SET owner_kind = 'root' WHERE id = :id",
        "UPDATE {t} SET owner_kind = 'root' WHERE id = :id",
        CRM_USER1,
    ),
    "created_at_out_of_range": Case(
        ("own",),
        "own",
        "UPDATE {t} SET created_at = 9223372036854775807 WHERE id = :id",
        "UPDATE {t} SET created_at = 'infinity' WHERE id = :id",
        CRM_USER1,
    ),
    "ciphertext_as_text": Case(
        ("own",),
        "own",
        "UPDATE {t} SET ciphertext = 'not bytes' WHERE id = :id",
        "UPDATE {t} SET ciphertext = ''::bytea WHERE id = :id",
        CRM_USER1,
    ),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
async def test_an_unreadable_credential_row_is_a_502_not_an_outage(
    backend: Backend, gateway: Gateway, upstream: tuple[FakeUpstream, str], name: str
) -> None:
    case = UNREADABLE[name]
    ids = await _store(gateway, case.rows)
    await backend.execute(getattr(case, backend.kind), ids[case.edited])
    response = await gateway.client.get("/contacts", headers={"X-Api-Key": gateway.key})
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["service"] == "crm" and body["reason"] == "credential_unavailable"
    assert not any(secret in response.text + str(response.headers) for secret in SECRETS)
    assert upstream[0].requests == []
    events = [entry.event() for entry in await backend.store.read()]
    denied = [e for e in events if e["action"] == "proxy.upstream"]
    assert (denied[-1]["decision"], denied[-1]["reason"]) == ("deny", "credential_unavailable")
