"""SQLiteStore: the embedded default backend, one file that several processes may share.

Every call runs its SQL on the store's one connection, in order, on that connection's own thread
(see ``_threads``). The event loop never blocks on disk, and one store may be shared by tasks,
threads and event loops alike. Audit appends made at the same time share one transaction (group
commit), and so do replay claims: one fsync for all of them. Across processes, SQLite's own locking
does the work: the database runs in WAL mode, so readers never wait for the writer, and every write
is one ``BEGIN IMMEDIATE`` transaction, which takes the write lock before it reads, so concurrent
writers queue (up to ``timeout`` seconds) instead of deciding on stale reads. That is what gives
``rotate`` and ``check_and_store`` a single winner and keeps the audit chain linear across
processes. ``synchronous=FULL`` makes each commit durable before the call returns.

The schema is created (or upgraded) on first use; call :meth:`SQLiteStore.initialize` at startup to
do it eagerly and fail fast on a bad path or a database from a newer agentguard.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import NamedTuple

from agentguard._clock import Clock, SystemClock
from agentguard._model import (
    Account,
    CredentialOwner,
    KeyRecord,
    StoredCredential,
    User,
    Workspace,
)
from agentguard.audit._chain import GENESIS_PREV, AuditEntry, seal
from agentguard.audit._events import AuditEvent
from agentguard.audit._prefix import ArchivedPrefix, drop_problem
from agentguard.errors import UsageError
from agentguard.storage._protocols import IntegrityError, KeyLookup, StorageError, revoke_selector
from agentguard.storage._sqlite import _queries as sql
from agentguard.storage._sqlite._base import BROKEN_RULE, SQLiteBase
from agentguard.storage._sqlite._connections import SQLiteConnections
from agentguard.storage._sqlite._gates import SQLiteGates
from agentguard.storage._sqlite._rows import (
    account_from_row,
    account_params,
    credential_from_row,
    credential_params,
    entry_from_row,
    key_from_row,
    key_params,
    lookup_from_row,
    micros,
    user_from_row,
    user_params,
    workspace_from_row,
    workspace_params,
)
from agentguard.storage._sqlite._threads import ConnectionThread, GroupCommit
from agentguard.storage._sqlite._transaction import immediate as _immediate

__all__ = ["SQLiteStore"]


_REPLAY_PURGE_BATCH = 64


class _Claim(NamedTuple):
    """One replay claim: the statement's named parameters (times in microseconds)."""

    key: bytes
    expires_at: int
    now: int


class SQLiteStore(SQLiteGates, SQLiteConnections, SQLiteBase):
    """DirectoryStore, KeyStore, ReplayCache, CredentialStore, AuditStore, the gates' stores
    (ApprovalStore, OperatorStore, LimitStore: see ``_gates``) and connected accounts'
    ConnectionStore and ConnectFlowStore (see ``_connections``) on one SQLite file.

    Args:
        path: the database file (created with mode 0600 if missing), or ``":memory:"`` for a
            private in-memory database that lives until :meth:`close`.
        clock: the clock that decides replay-cache expiry and when a budget counter past its
            ``expires_at`` may be forgotten; the system clock by default.
        timeout: seconds a write waits for another connection's write lock before failing.
        read_only: open an existing agentguard database for reading only: a missing file, an
            empty one or one without the agentguard schema raises :class:`StorageError`
            instead of being created or migrated (``agentguard audit verify`` and friends).

    Nothing touches the file until the first call, which creates or upgrades the schema;
    ``await store.initialize()`` (or ``async with``) does that at startup instead. Use it as an
    async context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        timeout: float = 5.0,
        read_only: bool = False,
    ) -> None:
        if timeout < 0:
            raise UsageError("timeout must be zero or more seconds")
        self.path: str = os.fspath(path)
        self.clock: Clock = clock or SystemClock()
        self.timeout = timeout
        self.read_only = read_only
        self._writer = ConnectionThread("agentguard-sqlite-writer", self)
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._appends: GroupCommit[list[AuditEvent], list[AuditEntry]] = GroupCommit(
            self._writer, self._append_groups, size=len
        )
        self._claims: GroupCommit[_Claim, bool] = GroupCommit(self._writer, self._claim_groups)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # Lifecycle

    async def initialize(self) -> None:
        """Open the database and create or upgrade its schema now rather than on first use.

        Raises :class:`~agentguard.storage.SchemaVersionError` for a database written
        by a newer agentguard. Calling it again does nothing.
        """
        await self._call(lambda connection: None)

    async def close(self) -> None:
        """Close the connection; later calls raise :class:`StorageError`. Idempotent."""
        try:
            await self._writer.call(self._close)  # after the writes already queued
        finally:
            self._writer.stop()

    async def __aenter__(self) -> SQLiteStore:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # DirectoryStore

    async def put_account(self, account: Account) -> None:
        """Insert or replace ``account``."""
        params = account_params(account)

        def work(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                connection.execute(sql.ACCOUNT_PUT, params)

        await self._call(work)

    async def put_workspace(self, workspace: Workspace) -> None:
        """Insert or replace ``workspace``; ``IntegrityError`` if its account does not exist."""
        params = workspace_params(workspace)

        def work(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                current = connection.execute(sql.WORKSPACE_ACCOUNT, (workspace.id,)).fetchone()
                if current is not None and current[0] != workspace.account_id:
                    raise IntegrityError("a workspace cannot move to another account")
                connection.execute(sql.WORKSPACE_PUT, params)

        await self._call(work, "workspace refers to an unknown account")

    async def put_user(self, user: User) -> None:
        """Insert or replace ``user``; ``IntegrityError`` if its account does not exist."""
        params = user_params(user)

        def work(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                current = connection.execute(sql.USER_ACCOUNT, (user.id,)).fetchone()
                if current is not None and current[0] != user.account_id:
                    raise IntegrityError("a user cannot move to another account")
                connection.execute(sql.USER_PUT, params)

        await self._call(work, "user refers to an unknown account")

    async def set_membership(self, user_id: str, workspace_id: str, *, member: bool) -> None:
        """Add or remove a membership (idempotent); both ends must exist in one account."""

        def work(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                user = connection.execute(sql.USER_ACCOUNT, (user_id,)).fetchone()
                workspace = connection.execute(sql.WORKSPACE_ACCOUNT, (workspace_id,)).fetchone()
                if user is None or workspace is None:
                    raise IntegrityError("membership refers to an unknown user or workspace")
                if user[0] != workspace[0]:
                    raise IntegrityError("user and workspace belong to different accounts")
                statement = sql.MEMBER_ADD if member else sql.MEMBER_REMOVE
                connection.execute(statement, (user_id, workspace_id))

        await self._call(work)

    async def get_account(self, account_id: str) -> Account | None:
        """The account, or ``None``."""
        row = await self._fetch_one(sql.ACCOUNT_GET, (account_id,))
        return None if row is None else account_from_row(row)

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        """The workspace, or ``None``."""
        row = await self._fetch_one(sql.WORKSPACE_GET, (workspace_id,))
        return None if row is None else workspace_from_row(row)

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        row = await self._fetch_one(sql.USER_GET, (user_id,))
        return None if row is None else user_from_row(row)

    async def is_member(self, user_id: str, workspace_id: str) -> bool:
        """Whether the user belongs to the workspace."""
        return await self._fetch_one(sql.MEMBER_GET, (user_id, workspace_id)) is not None

    async def list_users(self, account_id: str | None = None) -> list[User]:
        """Users ordered by id, optionally only those of one account."""
        if account_id is None:
            rows = await self._fetch_all(sql.USER_LIST, ())
        else:
            rows = await self._fetch_all(sql.USER_LIST_ACCOUNT, (account_id,))
        return [user_from_row(row) for row in rows]

    # KeyStore

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        """Insert all ``records`` or none; a duplicate id or hash raises ``IntegrityError``."""
        params = [key_params(record) for record in records]
        if not params:
            return

        def work(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                connection.executemany(sql.KEY_INSERT, params)

        await self._call(work, "duplicate key id or key hash")

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        """The key with this hash joined with its user, account and membership: one query."""
        row = await self._fetch_one(sql.KEY_LOOKUP, (key_hash,))
        return None if row is None else lookup_from_row(row)

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        """Mark refresh key ``used_id`` used and insert ``new``, in one write transaction.

        The conditional ``UPDATE`` runs under the database write lock, so of concurrent calls
        from any number of stores on one file, exactly one sees the key unused; it matches
        nothing when the key's family has been revoked.
        """
        used_at = micros(now)
        params = [key_params(record) for record in new]

        def work(connection: sqlite3.Connection) -> bool:
            with _immediate(connection):
                marked = connection.execute(sql.KEY_ROTATE_MARK, (used_at, used_id)).rowcount
                if marked != 1:
                    return False
                connection.executemany(sql.KEY_INSERT, params)
                return True

        return await self._call(work, "duplicate key id or key hash")

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

        A family, or every family of a user, is also marked revoked in the same write
        transaction, which lookup and rotation read: keys added to it later are revoked too.
        Already revoked keys keep their first revocation time and reason.
        """
        selector, value = revoke_selector(key_id=key_id, family_id=family_id, user_id=user_id)
        params = {"now": micros(now), "reason": reason, "value": value}

        def work(connection: sqlite3.Connection) -> int:
            with _immediate(connection):
                count = connection.execute(sql.REVOKE_BY[selector], params).rowcount
                if selector in sql.MARK_FAMILIES:
                    connection.execute(sql.MARK_FAMILIES[selector], params)
                return count

        return await self._call(work)

    async def list_keys(
        self, *, user_id: str | None = None, family_id: str | None = None
    ) -> list[KeyRecord]:
        """Key records in insertion order, optionally filtered by user and family."""
        rows = await self._fetch_all(sql.KEY_LIST, {"user_id": user_id, "family_id": family_id})
        return [key_from_row(row) for row in rows]

    # ReplayCache

    async def check_and_store(self, key: bytes, expires_at: datetime) -> bool:
        """Claim ``key`` until ``expires_at``; ``True`` if it was absent or expired by ``clock``.

        Each call also forgets a bounded number of expired keys. Claims made while a
        transaction is being written share the next one (group commit), each decided by its
        own statement in queue order, so of two claims of one key exactly one wins.
        """
        if not isinstance(key, bytes | bytearray | memoryview):  # checked alone, not in a group
            raise StorageError("a replay cache key is bytes")
        claim = _Claim(bytes(key), micros(expires_at), micros(self.clock.now()))
        return await self._claims.submit(claim)

    def _claim_groups(self, claims: list[_Claim]) -> list[bool]:
        """Claim several keys in one durable transaction (group commit), in queue order."""

        def work(connection: sqlite3.Connection) -> list[bool]:
            with _immediate(connection):
                # The earliest "now" of the group: nothing live for any of its claims is forgotten.
                oldest = min(claim.now for claim in claims)
                connection.execute(sql.REPLAY_PURGE, (oldest, _REPLAY_PURGE_BATCH * len(claims)))
                return [
                    connection.execute(sql.REPLAY_CLAIM, claim._asdict()).rowcount == 1
                    for claim in claims
                ]

        return self._run(work, BROKEN_RULE)

    # CredentialStore

    async def put_credential(self, credential: StoredCredential) -> None:
        """Insert or replace the credential for (service, owner_kind, owner_id)."""
        params = credential_params(credential)

        def work(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                connection.execute(sql.CREDENTIAL_PUT, params)

        await self._call(work)

    async def get_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> StoredCredential | None:
        """The credential for (service, owner_kind, owner_id), or ``None``."""
        row = await self._fetch_one(
            sql.CREDENTIAL_GET, (service, CredentialOwner(owner_kind).value, owner_id)
        )
        return None if row is None else credential_from_row(row)

    async def delete_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> bool:
        """Delete the credential; ``True`` if there was one."""
        params = (service, CredentialOwner(owner_kind).value, owner_id)

        def work(connection: sqlite3.Connection) -> bool:
            with _immediate(connection):
                return connection.execute(sql.CREDENTIAL_DELETE, params).rowcount == 1

        return await self._call(work)

    async def list_credentials(self, service: str | None = None) -> list[StoredCredential]:
        """Credentials ordered by id, optionally only those of one service."""
        if service is None:
            rows = await self._fetch_all(sql.CREDENTIAL_LIST, ())
        else:
            rows = await self._fetch_all(sql.CREDENTIAL_LIST_SERVICE, (service,))
        return [credential_from_row(row) for row in rows]

    # AuditStore

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        """Seal ``events`` after the head and store them in one durable write transaction.

        The head is read inside the transaction that inserts, under the write lock, so
        appends from any number of tasks and processes form one chain. Calls made while a
        transaction is being written share the next one (group commit); each returns once its
        own events are durable, and a call's events are never split between transactions.
        """
        if not events:
            return []
        return await self._appends.submit(list(events))

    def _append_groups(self, groups: list[list[AuditEvent]]) -> list[list[AuditEntry]]:
        """Seal and store several calls' events in one durable transaction (group commit)."""

        def work(connection: sqlite3.Connection) -> list[list[AuditEntry]]:
            with _immediate(connection):
                head = connection.execute(sql.AUDIT_HEAD).fetchone()
                seq, prev = (0, GENESIS_PREV) if head is None else (head[0] + 1, head[1])
                results: list[list[AuditEntry]] = []
                rows: list[tuple[int, bytes, bytes, bytes]] = []
                for events in groups:
                    sealed: list[AuditEntry] = []
                    for event in events:
                        entry = seal(event, seq, prev)
                        sealed.append(entry)
                        rows.append((entry.seq, prev, entry.hash, entry.body))
                        seq, prev = seq + 1, entry.hash
                    results.append(sealed)
                connection.executemany(sql.AUDIT_APPEND, rows)
                return results

        return self._run(work, "audit append conflicts with the stored chain")

    async def read(self, start: int = 0, stop: int | None = None) -> list[AuditEntry]:
        """Entries with ``start <= seq < stop`` in order (``stop=None``: to the head)."""
        if stop is None:
            rows = await self._fetch_all(sql.AUDIT_READ, (start,))
        else:
            rows = await self._fetch_all(sql.AUDIT_READ_TO, (start, stop))
        return [entry_from_row(row) for row in rows]

    async def read_rows(self, start: int, stop: int) -> list[tuple[object, ...]]:
        """The rows ``(seq, hash, body)`` with ``start <= seq < stop`` as sqlite3 gives them
        (:class:`~agentguard.storage._protocols.AuditRowStore`): what :meth:`read` converts."""
        return await self._fetch_all(sql.AUDIT_READ_TO, (start, stop))

    async def head(self) -> AuditEntry | None:
        """The newest entry, or ``None`` for an empty log."""
        row = await self._fetch_one(sql.AUDIT_HEAD, ())
        return None if row is None else entry_from_row(row)

    # AuditArchiveStore

    async def archived_prefix(self) -> ArchivedPrefix | None:
        """What the store kept of the events it dropped, or ``None``."""
        row = await self._fetch_one(sql.AUDIT_ARCHIVE_GET, ())
        return None if row is None else ArchivedPrefix.from_json(row[0])

    async def drop_prefix(self, prefix: ArchivedPrefix) -> int:
        """Delete the entries below ``prefix.size`` and keep ``prefix``, in one transaction."""
        text = prefix.to_json()

        def work(connection: sqlite3.Connection) -> int:
            with _immediate(connection):
                row = connection.execute(sql.AUDIT_ARCHIVE_GET).fetchone()
                kept = None if row is None else ArchivedPrefix.from_json(row[0])
                last = connection.execute(sql.AUDIT_HASH_AT, (prefix.size - 1,)).fetchone()
                head = connection.execute(sql.AUDIT_HEAD).fetchone()
                problem = drop_problem(
                    kept,
                    prefix,
                    None if last is None else last[0],
                    None if head is None else head[0],
                )
                if problem is not None:
                    raise IntegrityError(problem)
                connection.execute(sql.AUDIT_ARCHIVE_PUT, (prefix.size, text))
                return connection.execute(sql.AUDIT_ARCHIVE_DROP, (prefix.size,)).rowcount

        return await self._call(work, "the archived prefix does not match the log")
