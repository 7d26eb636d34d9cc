"""The PostgreSQL schema, its version, and :func:`upgrade`, which creates or migrates it.

Every table lives in one PostgreSQL schema (``agentguard`` by default), so an application's own
tables never collide with ours and a test can isolate itself in a schema of its own. The version
is kept in a one-row ``schema_version`` table. :func:`upgrade` runs all pending migrations in
one transaction under a transaction-scoped advisory lock, so instances starting together migrate
exactly once, and refuses a schema written by a newer agentguard.

Layout choices:

- times are ``timestamptz`` (microsecond precision, read back as aware UTC datetimes);
- grants and key scopes are ``jsonb`` (``Grants.to_dict()``);
- ``keys.pos`` and ``credentials.pos`` are identity columns recording insertion order;
- ``revoked_families`` marks every family revoked as a whole (by family or by user): a key of a
  marked family reads as revoked and cannot rotate, even one committed after the revocation;
- a membership carries its account, and composite foreign keys make a membership across
  accounts impossible; triggers refuse moving a user or workspace to another account;
- the audit table enforces its own linearity: ``seq`` is the primary key, ``prev`` is unique,
  a trigger refuses a row that does not extend the chain, and others refuse UPDATE, DELETE and
  TRUNCATE; ``audit_head`` is the one row every appending transaction locks;
- the gates (version 4): ``approvals`` and ``operators`` (token hashes only) keep insertion
  order in ``pos``; ``limit_counters`` and ``rate_buckets`` hold budgets and rate limits, a
  bucket's ``tat`` in ``bigint`` microseconds so the rate arithmetic is exact; each keeps the
  outcome of its last change in ``allowed``, so one upsert can both decide and report;
- connected accounts (version 5): ``connections`` keyed by (service, user_id) with a unique
  ``id`` and a ``version`` for compare-and-set, ciphertexts in ``bytea``, scopes as a JSON
  array in ``text``; service and user id collate as ``"C"`` so listings order by code point
  whatever the database's locale; ``connect_flows`` (single-use tickets and OAuth states, found
  by the SHA-256 of their token, never the token); ``leases`` (the refresh single flight);
- key audiences (version 6): ``keys.audience``, the normalised RFC 8707 resource a key was
  issued for, ``NULL`` for a deployment-wide key (every key written before version 6);
  revocation triggers: ``notify_revocation()`` on keys, revoked_families, users, memberships and
  accounts ``pg_notify`` the ids a change names (live streams, ``agentguard._live_streams``).
"""

from __future__ import annotations

import re
from typing import Any

from agentguard._extras import import_extra
from agentguard.errors import UsageError
from agentguard.storage._postgres._notify import NOTIFY_STATEMENTS
from agentguard.storage._sqlite.schema import SchemaVersionError

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "current_version",
    "quote_schema",
    "upgrade",
]

SCHEMA_VERSION = 6
"""The schema version this code writes and reads."""

DEFAULT_SCHEMA = "agentguard"

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# {s} is the quoted schema name; nothing else is ever formatted into SQL.
_V1: tuple[str, ...] = (
    """CREATE TABLE {s}.schema_version (
        version integer NOT NULL
    )""",
    """CREATE TABLE {s}.accounts (
        id text PRIMARY KEY,
        name text NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'closed'))
    )""",
    """CREATE TABLE {s}.workspaces (
        id text PRIMARY KEY,
        account_id text NOT NULL REFERENCES {s}.accounts (id),
        name text NOT NULL,
        UNIQUE (id, account_id)
    )""",
    """CREATE TABLE {s}.users (
        id text PRIMARY KEY,
        account_id text NOT NULL REFERENCES {s}.accounts (id),
        name text NOT NULL,
        enabled boolean NOT NULL,
        grants jsonb NOT NULL,
        UNIQUE (id, account_id)
    )""",
    "CREATE INDEX users_account ON {s}.users (account_id)",
    """CREATE FUNCTION {s}.refuse_account_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
    BEGIN
        IF NEW.account_id IS DISTINCT FROM OLD.account_id THEN
            RAISE EXCEPTION 'a % cannot move to another account', TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER users_keep_account BEFORE UPDATE OF account_id ON {s}.users
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_account_change()""",
    """CREATE TRIGGER workspaces_keep_account BEFORE UPDATE OF account_id ON {s}.workspaces
    FOR EACH ROW EXECUTE FUNCTION {s}.refuse_account_change()""",
    """CREATE TABLE {s}.memberships (
        user_id text NOT NULL,
        workspace_id text NOT NULL,
        account_id text NOT NULL,
        PRIMARY KEY (user_id, workspace_id),
        FOREIGN KEY (user_id, account_id) REFERENCES {s}.users (id, account_id),
        FOREIGN KEY (workspace_id, account_id) REFERENCES {s}.workspaces (id, account_id)
    )""",
    "CREATE INDEX memberships_workspace ON {s}.memberships (workspace_id)",
    # No foreign keys from keys to the directory: a key outlives its owner records, and
    # lookup reports a missing user or account as None instead.
    """CREATE TABLE {s}.keys (
        pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        kind text NOT NULL CHECK (kind IN ('access', 'refresh')),
        key_hash bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
        family_id text NOT NULL,
        user_id text NOT NULL,
        workspace_id text NOT NULL,
        account_id text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz,
        revoked_reason text,
        used_at timestamptz,
        scope jsonb,
        jkt text
    )""",
    "CREATE INDEX keys_user ON {s}.keys (user_id)",
    "CREATE INDEX keys_family ON {s}.keys (family_id)",
    """CREATE TABLE {s}.replay (
        key bytea PRIMARY KEY,
        expires_at timestamptz NOT NULL
    )""",
    "CREATE INDEX replay_expiry ON {s}.replay (expires_at)",
    """CREATE TABLE {s}.credentials (
        pos bigint GENERATED ALWAYS AS IDENTITY,
        service text NOT NULL,
        owner_kind text NOT NULL,
        owner_id text NOT NULL,
        id text NOT NULL,
        scope text NOT NULL,
        ciphertext bytea NOT NULL,
        key_id text NOT NULL,
        created_at timestamptz NOT NULL,
        PRIMARY KEY (service, owner_kind, owner_id)
    )""",
    """CREATE TABLE {s}.audit (
        seq bigint PRIMARY KEY CHECK (seq >= 0),
        prev bytea NOT NULL UNIQUE,
        hash bytea NOT NULL,
        body bytea NOT NULL
    )""",
    """CREATE TABLE {s}.audit_head (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        seq bigint NOT NULL,
        hash bytea NOT NULL
    )""",
    "INSERT INTO {s}.audit_head (seq, hash) VALUES (-1, decode(repeat('00', 32), 'hex'))",
    """CREATE FUNCTION {s}.audit_extends_chain() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
    BEGIN
        IF NOT (
            (NEW.seq = 0 AND NEW.prev = decode(repeat('00', 32), 'hex'))
            OR NEW.prev IS NOT DISTINCT FROM
                (SELECT a.hash FROM {s}.audit AS a WHERE a.seq = NEW.seq - 1)
        ) THEN
            RAISE EXCEPTION 'audit entry % does not extend the chain', NEW.seq
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE FUNCTION {s}.audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$""",
    """CREATE TRIGGER audit_extends_chain BEFORE INSERT ON {s}.audit
    FOR EACH ROW EXECUTE FUNCTION {s}.audit_extends_chain()""",
    """CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON {s}.audit
    FOR EACH ROW EXECUTE FUNCTION {s}.audit_append_only()""",
    """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {s}.audit
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.audit_append_only()""",
    "REVOKE UPDATE, DELETE, TRUNCATE ON {s}.audit FROM PUBLIC",
)

# Version 2: revoked families. A family (or user) revocation records the family here in the
# transaction that revokes its rows, and both the key lookup and rotation read it: a key that a
# concurrent rotation commits into the family after the revocation's snapshot is dead as well.
_V2: tuple[str, ...] = (
    """CREATE TABLE {s}.revoked_families (
        family_id text PRIMARY KEY,
        revoked_at timestamptz NOT NULL,
        reason text NOT NULL
    )""",
)

# Version 3: audit archiving. ``audit_archive`` holds the tree hashes kept of an archived prefix
# (its size and the ArchivedPrefix JSON); rows of the log below that size may then be deleted
# (by a role holding DELETE, which PUBLIC does not), and no others. A new genesis is refused
# once a prefix was archived.
_V3: tuple[str, ...] = (
    """CREATE TABLE {s}.audit_archive (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        size bigint NOT NULL CHECK (size > 0),
        prefix text NOT NULL
    )""",
    # Hashes only, no secret; the append trigger and checkpointer (as the app role) read it.
    "GRANT SELECT ON {s}.audit_archive TO PUBLIC",
    """CREATE OR REPLACE FUNCTION {s}.audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            IF OLD.seq < coalesce((SELECT a.size FROM {s}.audit_archive AS a), 0) THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$""",
    """CREATE OR REPLACE FUNCTION {s}.audit_extends_chain() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
    BEGIN
        IF NOT (
            (NEW.seq = 0 AND NEW.prev = decode(repeat('00', 32), 'hex')
                AND NOT EXISTS (SELECT 1 FROM {s}.audit_archive))
            OR NEW.prev IS NOT DISTINCT FROM
                (SELECT a.hash FROM {s}.audit AS a WHERE a.seq = NEW.seq - 1)
        ) THEN
            RAISE EXCEPTION 'audit entry % does not extend the chain', NEW.seq
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$""",
)

# Version 4: the gates. Approvals (the pending approval of a binding is found through the
# partial index), operator token hashes, budget counters and rate-limit buckets.
_V4: tuple[str, ...] = (
    """CREATE TABLE {s}.approvals (
        pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'consumed')),
        binding text NOT NULL,
        family_id text NOT NULL,
        key_id text NOT NULL,
        user_id text NOT NULL,
        workspace_id text NOT NULL,
        account_id text NOT NULL,
        service text,
        scope text NOT NULL,
        method text NOT NULL,
        path text NOT NULL,
        query text NOT NULL,
        body_digest text NOT NULL,
        body_bytes bigint NOT NULL CHECK (body_bytes >= 0),
        body_preview text NOT NULL,
        rule_version text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        decided_at timestamptz,
        decided_by text,
        consumed_at timestamptz,
        headers text NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX approvals_pending ON {s}.approvals (binding) WHERE status = 'pending'",
    "CREATE INDEX approvals_created ON {s}.approvals (created_at)",
    "CREATE INDEX approvals_user ON {s}.approvals (user_id, created_at)",
    """CREATE TABLE {s}.operators (
        pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        name text NOT NULL,
        token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
        created_at timestamptz NOT NULL,
        expires_at timestamptz,
        revoked_at timestamptz
    )""",
    """CREATE TABLE {s}.limit_counters (
        name text PRIMARY KEY,
        used bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        allowed boolean NOT NULL
    )""",
    "CREATE INDEX limit_counters_expiry ON {s}.limit_counters (expires_at)",
    """CREATE TABLE {s}.rate_buckets (
        name text PRIMARY KEY,
        tat bigint NOT NULL,
        allowed boolean NOT NULL
    )""",
    "CREATE INDEX rate_buckets_tat ON {s}.rate_buckets (tat)",
)

# Version 5: connected accounts. One connection per (service, user), its id unique across all;
# connect flows found by their token's hash (unique) and swept by expiry; named leases.
_V5: tuple[str, ...] = (
    """CREATE TABLE {s}.connections (
        id text NOT NULL UNIQUE,
        service text COLLATE "C" NOT NULL,
        user_id text COLLATE "C" NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'broken')),
        access_token bytea NOT NULL,
        refresh_token bytea,
        expires_at timestamptz,
        scopes text NOT NULL,
        key_id text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        version bigint NOT NULL CHECK (version >= 1),
        PRIMARY KEY (service, user_id)
    )""",
    "CREATE INDEX connections_user ON {s}.connections (user_id, service)",
    """CREATE TABLE {s}.connect_flows (
        id text PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('ticket', 'state')),
        token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
        service text NOT NULL,
        user_id text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        browser_hash bytea,
        verifier bytea,
        created_by text
    )""",
    "CREATE INDEX connect_flows_expiry ON {s}.connect_flows (expires_at)",
    """CREATE TABLE {s}.leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        until timestamptz NOT NULL
    )""",
)

# Version 6: key audiences (RFC 8707). Existing keys keep NULL: deployment-wide, as they were.
# Adding a nullable column without a default rewrites no rows and holds its lock only briefly.
# Also: the revocation triggers that tell every instance's live streams what changed.
_V6: tuple[str, ...] = (
    "ALTER TABLE {s}.keys ADD COLUMN audience text CHECK (octet_length(audience) <= 2048)",
    *NOTIFY_STATEMENTS,
)

_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}
"""Statements that take a schema from version ``n - 1`` to ``n``."""


def quote_schema(name: str) -> str:
    """``name`` double-quoted for SQL, after checking it is a plain lower-case identifier.

    Only ``[a-z_][a-z0-9_]*`` up to 63 characters is accepted, so a schema name from
    configuration can never carry SQL.
    """
    if not isinstance(name, str) or _SCHEMA_NAME.fullmatch(name) is None:
        raise UsageError(
            "a schema name is 1-63 characters of lower-case letters, digits and underscores, "
            "not starting with a digit"
        )
    return f'"{name}"'


async def current_version(connection: Any, schema: str = DEFAULT_SCHEMA) -> int:
    """The schema version stored in ``schema`` (0 when nothing is there yet)."""
    quoted = quote_schema(schema)
    # A plain catalog query (not to_regclass) so it reads with this statement's snapshot and
    # sees a migration another session committed while this one waited for the lock.
    exists = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables"
        " WHERE schemaname = $1 AND tablename = 'schema_version')",
        schema,
    )
    if not exists:
        return 0
    version = await connection.fetchval(f"SELECT max(version) FROM {quoted}.schema_version")  # noqa: S608
    return int(version or 0)


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database schema has version {version}, newer than the version "
            f"{SCHEMA_VERSION} this agentguard understands; upgrade agentguard to open it"
        )


async def _upgrade_on(connection: Any, schema: str) -> int:
    quoted = quote_schema(schema)
    version = await current_version(connection, schema)
    _refuse_newer(version)
    if version == SCHEMA_VERSION:
        return version
    async with connection.transaction():
        # Serialise migrators of this schema; the lock ends with the transaction.
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('agentguard.schema:' || $1, 0))", schema
        )
        version = await current_version(connection, schema)  # another instance may have won
        _refuse_newer(version)
        if version == SCHEMA_VERSION:
            return version
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                await connection.execute(statement.format(s=quoted))
        await connection.execute(f"DELETE FROM {quoted}.schema_version")  # noqa: S608
        await connection.execute(
            f"INSERT INTO {quoted}.schema_version (version) VALUES ($1)",  # noqa: S608
            SCHEMA_VERSION,
        )
    return SCHEMA_VERSION


async def upgrade(dsn_or_pool: Any, *, schema: str = DEFAULT_SCHEMA) -> int:
    """Create or upgrade the agentguard tables in ``schema`` to :data:`SCHEMA_VERSION`.

    ``dsn_or_pool`` is a ``postgresql://`` URL, an ``asyncpg`` pool or an ``asyncpg``
    connection. Returns the version the schema has afterwards. Idempotent and safe to run from
    several instances at once; raises :class:`SchemaVersionError` for a schema written by a
    newer agentguard. Run it as the role that should own the tables (see the how-to on
    PostgreSQL for a separate, less privileged application role).
    """
    quote_schema(schema)
    if isinstance(dsn_or_pool, str):
        asyncpg = import_extra("asyncpg")

        connection = await asyncpg.connect(dsn_or_pool)
        try:
            return await _upgrade_on(connection, schema)
        finally:
            await connection.close()
    if hasattr(dsn_or_pool, "acquire"):
        async with dsn_or_pool.acquire() as connection:
            return await _upgrade_on(connection, schema)
    return await _upgrade_on(dsn_or_pool, schema)
