"""PostgresStore: every storage protocol on a PostgreSQL database shared by every instance.

All state lives in the database, so any number of app instances (processes, hosts) share it and
see each other's writes on their next call: nothing is cached. The rules that must hold across
instances are enforced by the server, not by this process:

- ``rotate`` is one statement whose conditional ``UPDATE ... RETURNING`` takes the row lock on
  the refresh key, so of concurrent rotations (any instances) exactly one matches the unused
  row; the new keys are inserted by the same statement only if it won, and a duplicate rolls
  the whole statement back.
- ``revoke`` by family or user marks the families (``revoked_families``) in the statement that
  revokes their rows; ``lookup`` and ``rotate`` read the mark, so a rotation that committed its
  successor after the revocation's snapshot (READ COMMITTED cannot show it that row) has minted
  keys that are revoked all the same.
- ``check_and_store`` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= now``
  statement: a live entry is never taken over, an expired one is (by the store's clock).
- ``append`` goes through a per-instance
  :class:`~agentguard.storage._postgres.batcher.AuditBatcher`:
  one READ COMMITTED transaction per batch locks the ``audit_head`` row, seals the batch after
  it, inserts it with one multi-row ``INSERT`` and moves the head. The table itself refuses a
  row that does not extend the chain, and any UPDATE, DELETE or TRUNCATE.
- connected accounts (``_connections``): ``update_connection`` is one compare-and-set
  ``UPDATE``, ``take_flow`` one ``DELETE ... RETURNING``, ``acquire_lease`` one upsert that
  takes over only a lease that has run out: one winner each across instances.

Driver errors for broken rules (unique, foreign-key, check violations) become
:class:`~agentguard.storage.IntegrityError`; every other driver failure (a lost connection, a
closed pool, a timeout) becomes :class:`~agentguard.storage.StorageError` naming only the
driver exception's type (the guard answers 503). The pool replaces broken connections, so the
store recovers by itself once the server is back. Reads that fail because a pooled connection
was cut are retried once. One store belongs to one event loop (asyncpg's pools do): a call from
another loop raises :class:`~agentguard.storage.StorageError` instead of touching the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agentguard._clock import Clock, SystemClock, utc
from agentguard._extras import import_extra
from agentguard._model import (
    Account,
    CredentialOwner,
    KeyRecord,
    StoredCredential,
    User,
    Workspace,
)
from agentguard.audit._chain import AuditEntry, seal
from agentguard.audit._events import AuditEvent
from agentguard.audit._prefix import ArchivedPrefix, drop_problem
from agentguard.errors import UsageError
from agentguard.storage._driver_errors import driver_errors
from agentguard.storage._postgres._connection_queries import ConnectionQueries
from agentguard.storage._postgres._connections import PostgresConnections
from agentguard.storage._postgres._gate_queries import GateQueries
from agentguard.storage._postgres._gates import PostgresGates
from agentguard.storage._postgres._queries import Queries
from agentguard.storage._postgres._rows import (
    account_from_row,
    account_params,
    credential_from_row,
    credential_params,
    entry_from_row,
    key_columns,
    key_from_row,
    lookup_from_row,
    user_from_row,
    user_params,
    workspace_from_row,
    workspace_params,
)
from agentguard.storage._postgres.batcher import AuditBatcher
from agentguard.storage._postgres.schema import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    SchemaVersionError,
    current_version,
    quote_schema,
    upgrade,
)
from agentguard.storage._protocols import IntegrityError, KeyLookup, StorageError, revoke_selector

__all__ = ["PostgresStore"]

T = TypeVar("T")
Work = Callable[[Any], Awaitable[T]]

_DISCONNECT_STATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, cannot connect


def _is_integrity(exc: BaseException) -> bool:
    """A PostgreSQL integrity violation (SQLSTATE class 23), raised by a constraint or trigger."""
    return str(getattr(exc, "sqlstate", "") or "").startswith("23")


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection was lost (not that the statement was wrong)."""
    if isinstance(exc, (OSError, ConnectionError)):
        return True
    state = str(getattr(exc, "sqlstate", "") or "")
    if state.startswith("08") or state in _DISCONNECT_STATES:
        return True
    # asyncpg reports a connection the server cut while it sat idle in the pool as an
    # InternalClientError about protocol states (MagicStack/asyncpg#1069), or as an
    # InterfaceError once it has noticed that the socket is closed.
    name = type(exc).__name__
    if name == "InternalClientError":
        return True
    return name == "InterfaceError" and "closed" in str(exc)


def _discard(connection: Any) -> None:
    """Close a connection in an unknown protocol state so the pool never hands it out again."""
    asyncpg = import_extra("asyncpg")

    # InterfaceError: asyncpg already closed it and gave its slot back to the pool.
    with contextlib.suppress(asyncpg.InterfaceError):
        connection.terminate()


async def _keep_session(connection: Any) -> None:
    """Released connections skip asyncpg's ``RESET ALL`` round trip.

    The store's own connections never change session state (no ``SET``, ``LISTEN`` or session
    advisory locks); asyncpg still rolls back a transaction left open.
    """


def _count(status: str) -> int:
    """The row count at the end of a command status such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(PostgresGates, PostgresConnections):
    """DirectoryStore, KeyStore, ReplayCache, CredentialStore, AuditStore, the gates' stores
    (ApprovalStore, OperatorStore, LimitStore: see ``_gates``) and connected accounts'
    ConnectionStore and ConnectFlowStore (see ``_connections``) on PostgreSQL.

    Args:
        dsn: a ``postgresql://user@host:port/database`` URL (libpq syntax, as asyncpg takes it).
        clock: the clock that decides replay-cache expiry and when a budget counter past its
            ``expires_at`` may be forgotten; the system clock by default.
        schema: the PostgreSQL schema holding every table (a plain lower-case identifier).
        pool_min, pool_max: connection pool bounds.
        command_timeout: seconds any statement may take before it fails.
        auto_upgrade: create or upgrade the schema when the store opens; with ``False`` a
            missing or outdated schema raises :class:`SchemaVersionError` (run
            :func:`~agentguard.storage._postgres.upgrade` as the owning role instead).
        audit_batch_max: most audit events per group-commit transaction.
        audit_batch_wait: seconds an idle batcher waits for more appends (``0``: none).

    The pool opens on first use or on ``await store.initialize()`` / ``async with``; a schema
    written by a newer agentguard is refused there. Call :meth:`close` when done. One store
    belongs to one event loop.
    """

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock | None = None,
        schema: str = DEFAULT_SCHEMA,
        pool_min: int = 1,
        pool_max: int = 10,
        command_timeout: float = 5.0,
        auto_upgrade: bool = True,
        audit_batch_max: int = 256,
        audit_batch_wait: float = 0.0,
    ) -> None:
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise UsageError("need 0 <= pool_min <= pool_max and pool_max >= 1")
        if command_timeout <= 0:
            raise UsageError("command_timeout must be positive")
        self._queries = Queries.for_schema(quote_schema(schema))
        self._gate_queries = GateQueries.for_schema(quote_schema(schema))
        self._connection_queries = ConnectionQueries.for_schema(quote_schema(schema))
        self._dsn = dsn
        self.schema = schema
        self.clock: Clock = clock or SystemClock()
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.command_timeout = command_timeout
        self.auto_upgrade = auto_upgrade
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._batcher = AuditBatcher(
            self._write_audit_batch, max_events=audit_batch_max, max_wait=audit_batch_wait
        )

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"  # the DSN may hold a password

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> PostgresStore:
        """A store for ``postgresql://...`` (or ``postgres://``) with an optional ``schema``.

        ``postgresql://app@db:5432/prod?schema=agentguard_prod`` uses that schema; every other
        query parameter goes to the driver (``sslmode=require``, ``application_name=...``).
        """
        parts = urlsplit(url)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise UsageError("a PostgreSQL URL starts with postgresql://")
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for name, value in query if name == "schema"]
        rest = urlencode([(name, value) for name, value in query if name != "schema"])
        dsn = urlunsplit(parts._replace(query=rest))
        return cls(dsn, clock=clock, schema=schemas[-1] if schemas else DEFAULT_SCHEMA)

    # Lifecycle

    async def initialize(self) -> None:
        """Open the pool and check (or create, or upgrade) the schema now. Idempotent."""
        await self._get_pool()

    async def close(self) -> None:
        """Write queued audit events, then close the pool. Idempotent."""
        self._closed = True
        await self._batcher.close()
        async with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_loop(self) -> None:
        """Bind the store to the first event loop that uses it; refuse calls from any other."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise StorageError(
                "this PostgresStore belongs to another event loop: create one store per loop"
            )

    async def _get_pool(self) -> Any:
        self._check_loop()
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._closed:
                raise StorageError("this PostgresStore is closed")
            if self._pool is None:
                asyncpg = import_extra("asyncpg")

                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self.pool_min,
                    max_size=self.pool_max,
                    command_timeout=self.command_timeout,
                    reset=_keep_session,
                    # Every statement's guarantees (one winner, advisory-lock serialisation)
                    # are written for READ COMMITTED: pin it, whatever the server's default.
                    server_settings={"default_transaction_isolation": "read committed"},
                )
                try:
                    await self._check_schema(pool)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def _check_schema(self, pool: Any) -> None:
        async with pool.acquire() as connection:
            version = await current_version(connection, self.schema)
            if version == SCHEMA_VERSION:
                return
            if self.auto_upgrade or version > SCHEMA_VERSION:
                await upgrade(connection, schema=self.schema)
                return
        if version == 0:  # absent: an upgrade would create the (maybe mistyped) schema
            raise SchemaVersionError(
                f"schema {self.schema!r} does not exist or has no agentguard tables: check the "
                "database and ?schema= in the store URL"
            )
        raise SchemaVersionError(
            f"schema {self.schema!r} has version {version}, this agentguard needs "
            f"{SCHEMA_VERSION}: run `agentguard db upgrade` first"
        )

    # Running statements

    async def _attempt(self, work: Work[T]) -> T:
        pool = await self._get_pool()
        async with pool.acquire() as connection:
            try:
                return await work(connection)
            except Exception as exc:
                if is_disconnect(exc):
                    # One cut connection usually means all were (a restart, a failover):
                    # replace every pooled connection on its next use.
                    _discard(connection)
                    await pool.expire_connections()
                raise

    async def _write(self, work: Work[T], broken: str = "the write breaks a storage rule") -> T:
        with driver_errors("PostgreSQL"):
            try:
                return await self._attempt(work)
            except IntegrityError:
                raise
            except Exception as exc:
                if _is_integrity(exc):
                    raise IntegrityError(f"{broken} ({type(exc).__name__})") from exc
                raise

    async def _read(self, work: Work[T]) -> T:
        with driver_errors("PostgreSQL"):
            try:
                return await self._attempt(work)
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
            return await self._attempt(work)  # the pooled connection was cut: once more

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        return await self._read(lambda connection: connection.fetchrow(query, *args))

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        return await self._read(lambda connection: connection.fetch(query, *args))

    # DirectoryStore

    async def put_account(self, account: Account) -> None:
        """Insert or replace ``account``."""
        params = account_params(account)
        await self._write(lambda c: c.execute(self._queries.account_put, *params))

    async def put_workspace(self, workspace: Workspace) -> None:
        """Insert or replace ``workspace``; ``IntegrityError`` for an unknown or other account."""
        params = workspace_params(workspace)
        stored = await self._write(
            lambda c: c.fetchval(self._queries.workspace_put, *params),
            "workspace refers to an unknown account",
        )
        if stored is None:
            raise IntegrityError("a workspace cannot move to another account")

    async def put_user(self, user: User) -> None:
        """Insert or replace ``user``; ``IntegrityError`` for an unknown or other account."""
        params = user_params(user)
        stored = await self._write(
            lambda c: c.fetchval(self._queries.user_put, *params),
            "user refers to an unknown account",
        )
        if stored is None:
            raise IntegrityError("a user cannot move to another account")

    async def set_membership(self, user_id: str, workspace_id: str, *, member: bool) -> None:
        """Add or remove a membership (idempotent); both ends must exist in one account."""
        query = self._queries.member_add if member else self._queries.member_remove
        row = await self._write(lambda c: c.fetchrow(query, user_id, workspace_id))
        user_account, workspace_account = row[0], row[1]
        if user_account is None or workspace_account is None:
            raise IntegrityError("membership refers to an unknown user or workspace")
        if user_account != workspace_account:
            raise IntegrityError("user and workspace belong to different accounts")

    async def get_account(self, account_id: str) -> Account | None:
        """The account, or ``None``."""
        row = await self._fetchrow(self._queries.account_get, account_id)
        return None if row is None else account_from_row(row)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        """The workspace, or ``None``."""
        row = await self._fetchrow(self._queries.workspace_get, workspace_id)
        return None if row is None else workspace_from_row(row)

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        row = await self._fetchrow(self._queries.user_get, user_id)
        return None if row is None else user_from_row(row)

    async def is_member(self, user_id: str, workspace_id: str) -> bool:
        """Whether the user belongs to the workspace."""
        return await self._fetchrow(self._queries.member_get, user_id, workspace_id) is not None

    async def list_users(self, account_id: str | None = None) -> list[User]:
        """Users ordered by id, optionally only those of one account."""
        if account_id is None:
            rows = await self._fetch(self._queries.user_list)
        else:
            rows = await self._fetch(self._queries.user_list_account, account_id)
        return [user_from_row(row) for row in rows]

    # KeyStore

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        """Insert all ``records`` or none (one statement); duplicates raise ``IntegrityError``."""
        if not records:
            return
        columns = key_columns(records)
        await self._write(
            lambda c: c.execute(self._queries.key_insert, *columns),
            "duplicate key id or key hash",
        )

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        """The key with this hash joined with its user, account and membership: one query."""
        row = await self._fetchrow(self._queries.key_lookup, key_hash)
        return None if row is None else lookup_from_row(row)

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        """Mark refresh key ``used_id`` used and insert ``new``, in one statement.

        Of concurrent calls from any number of stores on one database, exactly one matches the
        unused row; a duplicate among ``new`` raises ``IntegrityError`` and changes nothing.
        """
        columns = key_columns(new)
        won = await self._write(
            lambda c: c.fetchval(self._queries.key_rotate, *columns, utc(now), used_id),
            "duplicate key id or key hash",
        )
        return bool(won)

    async def revoke(
        self,
        *,
        key_id: str | None = None,
        family_id: str | None = None,
        user_id: str | None = None,
        reason: str,
        now: datetime,
    ) -> int:
        """Revoke the unrevoked keys matching exactly one selector; return how many.

        A family, or every family of a user, is also marked revoked by the same statement;
        lookup and rotation read the mark, so a key a concurrent rotation commits into the
        family after this statement's snapshot is revoked too. Already revoked keys keep their
        first revocation time and reason.
        """
        selector, value = revoke_selector(key_id=key_id, family_id=family_id, user_id=user_id)
        if selector == "key_id":
            query = self._queries.revoke_key
            status = await self._write(lambda c: c.execute(query, utc(now), reason, value))
            return _count(status)
        query = self._queries.revoke_user if selector == "user_id" else self._queries.revoke_family
        count = await self._write(lambda c: c.fetchval(query, utc(now), reason, value))
        return int(count)

    async def list_keys(
        self, *, user_id: str | None = None, family_id: str | None = None
    ) -> list[KeyRecord]:
        """Key records in insertion order, optionally filtered by user and family."""
        rows = await self._fetch(self._queries.key_list, user_id, family_id)
        return [key_from_row(row) for row in rows]

    # ReplayCache

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        """Claim ``key`` until ``expires_at``; ``True`` if it was absent or expired by ``clock``.

        Each call also forgets up to 64 other expired keys.
        """
        now = utc(self.clock.now())
        claimed = await self._write(
            lambda c: c.fetchval(self._queries.replay_claim, bytes(key), utc(expires_at), now)
        )
        return bool(claimed)

    # CredentialStore

    async def put_credential(self, credential: StoredCredential) -> None:
        """Insert or replace the credential for (service, owner_kind, owner_id)."""
        params = credential_params(credential)
        await self._write(lambda c: c.execute(self._queries.credential_put, *params))

    async def get_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> StoredCredential | None:
        """The credential for (service, owner_kind, owner_id), or ``None``."""
        row = await self._fetchrow(
            self._queries.credential_get, service, CredentialOwner(owner_kind).value, owner_id
        )
        return None if row is None else credential_from_row(row)

    async def delete_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> bool:
        """Delete the credential; ``True`` if there was one."""
        kind = CredentialOwner(owner_kind).value
        deleted = await self._write(
            lambda c: c.fetchval(self._queries.credential_delete, service, kind, owner_id)
        )
        return bool(deleted)

    async def list_credentials(self, service: str | None = None) -> list[StoredCredential]:
        """Credentials ordered by id, optionally only those of one service."""
        rows = await self._fetch(self._queries.credential_list, service)
        return [credential_from_row(row) for row in rows]

    # AuditStore

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Seal ``events`` after the head and store them; returns once committed.

        Concurrent calls on this store share transactions (group commit); calls on other
        instances queue on the head row lock, so the chain stays linear.
        """
        if not events:
            return []
        if self._closed:
            raise StorageError("this PostgresStore is closed")
        self._check_loop()  # the batcher's queue and worker task belong to the store's loop
        return await self._batcher.append(events)

    async def _write_audit_batch(
        self, requests: list[list[AuditEvent]]
    ) -> list[list[AuditEntry] | Exception]:
        queries = self._queries

        async def work(connection: Any) -> list[list[AuditEntry] | Exception]:
            async with connection.transaction():
                head = await connection.fetchrow(queries.audit_lock_head)
                seq, prev = int(head[0]) + 1, bytes(head[1])
                results: list[list[AuditEntry] | Exception] = []
                seqs: list[int] = []
                prevs: list[bytes] = []
                hashes: list[bytes] = []
                bodies: list[bytes] = []
                for events in requests:
                    try:
                        sealed = _seal_run(events, seq, prev)
                    except Exception as exc:  # one caller's bad event fails only that call
                        results.append(exc)
                        continue
                    for entry in sealed:
                        seqs.append(entry.seq)
                        prevs.append(prev)
                        hashes.append(entry.hash)
                        bodies.append(entry.body)
                        seq, prev = entry.seq + 1, entry.hash
                    results.append(sealed)
                if seqs:
                    await connection.execute(
                        queries.audit_append, seqs, prevs, hashes, bodies, seq - 1, prev
                    )
                return results

        return await self._write(work, "audit append conflicts with the stored chain")

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        """Entries with ``start <= seq < stop`` in order (``stop=None``: to the head)."""
        if stop is not None and stop <= start:
            return []
        rows = await self._fetch(self._queries.audit_read, max(0, start), stop)
        return [entry_from_row(row) for row in rows]

    async def read_rows(self, start: int, stop: int) -> list[Any]:
        """The rows ``(seq, hash, body)`` with ``start <= seq < stop`` as asyncpg gives them
        (:class:`~agentguard.storage._protocols.AuditRowStore`): what :meth:`read` converts."""
        if stop <= start:
            return []
        return await self._fetch(self._queries.audit_read, max(0, start), stop)

    async def head(self) -> AuditEntry | None:
        """The newest entry, or ``None`` for an empty log."""
        row = await self._fetchrow(self._queries.audit_head)
        return None if row is None else entry_from_row(row)

    # AuditArchiveStore

    async def archived_prefix(self) -> ArchivedPrefix | None:
        """What the store kept of the events it dropped, or ``None``."""
        row = await self._fetchrow(self._queries.audit_archive_get)
        return None if row is None else ArchivedPrefix.from_json(row[0])

    async def drop_prefix(self, prefix: ArchivedPrefix) -> int:
        """Delete the entries below ``prefix.size`` and keep ``prefix``, in one transaction.

        Needs a role with DELETE on the audit table (the tables' owner): the application role
        of the PostgreSQL how-to has none, so run ``agentguard audit archive`` as the owner.
        """
        queries, text = self._queries, prefix.to_json()

        async def work(connection: Any) -> int:
            async with connection.transaction():
                row = await connection.fetchrow(queries.audit_archive_lock)
                kept = None if row is None else ArchivedPrefix.from_json(row[0])
                last = await connection.fetchval(queries.audit_hash_at, prefix.size - 1)
                head = await connection.fetchval(queries.audit_head_seq)
                found = None if last is None else bytes(last)
                problem = drop_problem(kept, prefix, found, None if head < 0 else int(head))
                if problem is not None:
                    raise IntegrityError(problem)
                await connection.execute(queries.audit_archive_put, prefix.size, text)
                status: str = await connection.execute(queries.audit_archive_drop, prefix.size)
                return int(status.rsplit(" ", 1)[-1])

        return await self._write(work, "the archived prefix does not match the log")


def _seal_run(events: Sequence[AuditEvent], seq: int, prev: bytes) -> list[AuditEntry]:
    sealed: list[AuditEntry] = []
    for event in events:
        entry = seal(event, seq, prev)
        sealed.append(entry)
        seq, prev = seq + 1, entry.hash
    return sealed
