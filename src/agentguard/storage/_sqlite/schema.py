"""The SQLite schema, its version, and the connection settings every store connection uses.

The schema is versioned in a one-row ``schema_version`` table. :func:`prepare` brings a
database up to :data:`SCHEMA_VERSION` inside one ``BEGIN IMMEDIATE`` transaction, so two
processes opening a fresh file at once create it exactly once, and refuses a database written
by a newer agentguard (downgrading would silently misread it).

Layout choices:

- times are ``INTEGER`` microseconds since the Unix epoch, UTC (exact round trip);
- grants and key scopes are JSON text (``Grants.to_dict()``);
- ``keys.pos`` and ``credentials.pos`` record insertion order, which ``list_keys`` promises;
- ``revoked_families`` marks every family revoked as a whole (by family or by user): a key of a
  marked family reads as revoked and cannot rotate, even one inserted after the revocation;
- the audit table enforces its own linearity: ``seq`` is the primary key, ``prev`` is unique,
  a trigger refuses a row that does not extend the head, and others refuse UPDATE and DELETE
  (DELETE only of rows below an archived prefix recorded in ``audit_archive``);
- the gates (version 4): ``approvals`` and ``operators`` (token hashes only) keep insertion
  order in ``pos``; ``limit_counters`` and ``rate_buckets`` hold budgets and rate limits, a
  bucket's ``tat`` in integer microseconds like every other instant;
- connected accounts (version 5): ``connections`` keyed by (service, user_id) with a unique
  ``id`` and a ``version`` for compare-and-set, ciphertexts in ``BLOB`` columns, scopes as a
  JSON array; ``connect_flows`` (single-use tickets and OAuth states, found by the SHA-256 of
  their token, never the token); ``leases`` (the refresh single flight across processes);
- key audiences (version 6): ``keys.audience``, the normalised RFC 8707 resource a key was
  issued for, ``NULL`` for a deployment-wide key (every key written before version 6).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from agentguard.storage._protocols import StorageError

__all__ = ["SCHEMA_VERSION", "SchemaVersionError", "configure", "open_read_only", "prepare"]

SCHEMA_VERSION = 6
"""The schema version this code writes and reads."""

_V1: tuple[str, ...] = (
    """CREATE TABLE schema_version (
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL
    )""",
    """CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id),
        name TEXT NOT NULL
    )""",
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id),
        name TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        grants TEXT NOT NULL
    )""",
    "CREATE INDEX users_account ON users (account_id)",
    """CREATE TABLE memberships (
        user_id TEXT NOT NULL REFERENCES users (id),
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        PRIMARY KEY (user_id, workspace_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX memberships_workspace ON memberships (workspace_id)",
    # No foreign keys from keys to the directory: a key outlives its owner records, and
    # lookup reports a missing user or account as None instead.
    """CREATE TABLE keys (
        pos INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        key_hash BLOB NOT NULL UNIQUE,
        family_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER,
        revoked_reason TEXT,
        used_at INTEGER,
        scope TEXT,
        jkt TEXT
    )""",
    "CREATE INDEX keys_user ON keys (user_id)",
    "CREATE INDEX keys_family ON keys (family_id)",
    """CREATE TABLE replay (
        key BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX replay_expiry ON replay (expires_at)",
    """CREATE TABLE credentials (
        pos INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        owner_kind TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        id TEXT NOT NULL,
        scope TEXT NOT NULL,
        ciphertext BLOB NOT NULL,
        key_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (service, owner_kind, owner_id)
    )""",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY CHECK (seq >= 0),
        prev BLOB NOT NULL UNIQUE,
        hash BLOB NOT NULL,
        body BLOB NOT NULL
    )""",
    """CREATE TRIGGER audit_extends_head BEFORE INSERT ON audit
    WHEN NOT (
        (NEW.seq = 0 AND NEW.prev = zeroblob(32))
        OR NEW.prev IS (SELECT hash FROM audit WHERE seq = NEW.seq - 1)
    )
    BEGIN SELECT RAISE(ABORT, 'audit entry does not extend the chain'); END""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)

# Version 2: revoked families. A family (or user) revocation records the family here, and both
# the key lookup and rotation read it, so a key a concurrent rotation adds to the family after
# the revocation is as dead as the keys the revocation updated.
_V2: tuple[str, ...] = (
    """CREATE TABLE revoked_families (
        family_id TEXT PRIMARY KEY,
        revoked_at INTEGER NOT NULL,
        reason TEXT NOT NULL
    ) WITHOUT ROWID""",
)

# Version 3: audit archiving. ``audit_archive`` holds the tree hashes kept of an archived prefix
# (one row: its size and the ArchivedPrefix JSON); the log's rows below that size may then be
# deleted, and no others. Inserting a new genesis (seq 0) after an archive is refused.
_V3: tuple[str, ...] = (
    """CREATE TABLE audit_archive (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        size INTEGER NOT NULL CHECK (size > 0),
        prefix TEXT NOT NULL
    )""",
    "DROP TRIGGER audit_no_delete",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    WHEN OLD.seq >= coalesce((SELECT size FROM audit_archive), 0)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    "DROP TRIGGER audit_extends_head",
    """CREATE TRIGGER audit_extends_head BEFORE INSERT ON audit
    WHEN NOT (
        (NEW.seq = 0 AND NEW.prev = zeroblob(32) AND NOT EXISTS (SELECT 1 FROM audit_archive))
        OR NEW.prev IS (SELECT hash FROM audit WHERE seq = NEW.seq - 1)
    )
    BEGIN SELECT RAISE(ABORT, 'audit entry does not extend the chain'); END""",
)

# Version 4: the gates. Approvals (one pending approval per binding is found through the partial
# index), operator token hashes, budget counters and rate-limit buckets.
_V4: tuple[str, ...] = (
    """CREATE TABLE approvals (
        pos INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'consumed')),
        binding TEXT NOT NULL,
        family_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        service TEXT,
        scope TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT NOT NULL,
        body_digest TEXT NOT NULL,
        body_bytes INTEGER NOT NULL,
        body_preview TEXT NOT NULL,
        rule_version TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        decided_at INTEGER,
        decided_by TEXT,
        consumed_at INTEGER,
        headers TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX approvals_pending ON approvals (binding) WHERE status = 'pending'",
    "CREATE INDEX approvals_created ON approvals (created_at)",
    "CREATE INDEX approvals_user ON approvals (user_id, created_at)",
    """CREATE TABLE operators (
        pos INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    )""",
    """CREATE TABLE limit_counters (
        name TEXT PRIMARY KEY,
        used INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX limit_counters_expiry ON limit_counters (expires_at)",
    """CREATE TABLE rate_buckets (
        name TEXT PRIMARY KEY,
        tat INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX rate_buckets_tat ON rate_buckets (tat)",
)

# Version 5: connected accounts. One connection per (service, user), its id unique across all;
# connect flows found by their token's hash (unique) and swept by expiry; named leases.
_V5: tuple[str, ...] = (
    """CREATE TABLE connections (
        id TEXT NOT NULL UNIQUE,
        service TEXT NOT NULL,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'broken')),
        access_token BLOB NOT NULL,
        refresh_token BLOB,
        expires_at INTEGER,
        scopes TEXT NOT NULL,
        key_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        PRIMARY KEY (service, user_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX connections_user ON connections (user_id, service)",
    """CREATE TABLE connect_flows (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('ticket', 'state')),
        token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
        service TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        browser_hash BLOB,
        verifier BLOB,
        created_by TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX connect_flows_expiry ON connect_flows (expires_at)",
    """CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

# Version 6: key audiences (RFC 8707). Existing keys keep NULL: deployment-wide, as they were.
_V6: tuple[str, ...] = ("ALTER TABLE keys ADD COLUMN audience TEXT",)

_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}
"""Statements that take a database from version ``n - 1`` to ``n``."""


class SchemaVersionError(StorageError):
    """The database was written by a newer agentguard whose schema this version cannot read."""


def _switch_to_wal(connection: sqlite3.Connection, timeout: float) -> object:
    """``PRAGMA journal_mode = WAL``, retried until ``timeout``: SQLite answers "database is
    locked" at once, without its busy handler, while another connection opens the same new file.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
        else:
            return mode


def configure(connection: sqlite3.Connection, *, timeout: float, file_backed: bool) -> None:
    """Apply the per-connection settings: WAL, ``synchronous=FULL``, foreign keys, busy timeout.

    WAL lets readers proceed while one writer commits; ``synchronous=FULL`` makes each commit
    durable before it returns (the audit contract says "returns once durable").
    """
    connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA synchronous = FULL")
    if file_backed:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            mode = _switch_to_wal(connection, timeout)
            if str(mode).lower() != "wal":
                raise StorageError(f"SQLite refused WAL journal mode (got {mode!r})")


def _current_version(connection: sqlite3.Connection) -> int:
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    (version,) = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(version or 0)


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database has schema version {version}, newer than the version "
            f"{SCHEMA_VERSION} this agentguard understands; upgrade agentguard to open it"
        )


def prepare(connection: sqlite3.Connection) -> None:
    """Create or upgrade the schema to :data:`SCHEMA_VERSION`, atomically.

    Raises :class:`SchemaVersionError` for a database whose version is newer than this code.
    A database already at this version costs one read and no write lock. The connection must
    be in autocommit mode (``isolation_level=None``).
    """
    version = _current_version(connection)
    _refuse_newer(version)
    if version == SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _current_version(connection)  # another process may have migrated meanwhile
        _refuse_newer(version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                connection.execute(statement)
        if version < SCHEMA_VERSION:
            connection.execute("DELETE FROM schema_version")
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def open_read_only(path: str, *, timeout: float) -> sqlite3.Connection:
    """Open an existing agentguard database without creating, migrating or writing it.

    Raises :class:`StorageError` naming ``path`` when the file is missing, is not a SQLite
    database, or holds no agentguard schema (an empty file, a mistyped path), and
    :class:`SchemaVersionError` for a database written by a newer agentguard.
    """
    if path == ":memory:" or not Path(path).is_file():
        raise StorageError(f"no SQLite database at {path}")
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        connection = sqlite3.connect(
            uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the SQLite database at {path}: {exc}") from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        version = _current_version(connection)
    except sqlite3.Error as exc:
        connection.close()
        raise StorageError(f"{path} is not a readable SQLite database: {exc}") from None
    if version != SCHEMA_VERSION:
        connection.close()
        _refuse_newer(version)
        if version > 0:
            raise StorageError(
                f"{path} has schema version {version}, older than the version {SCHEMA_VERSION} "
                "this agentguard reads: run `agentguard db upgrade` first"
            )
        raise StorageError(f"{path} holds no agentguard schema (is it the right file?)")
    return connection
