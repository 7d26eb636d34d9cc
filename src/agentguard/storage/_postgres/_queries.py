"""The SQL statements of :class:`~agentguard.storage.PostgresStore`, spelled out.

Each statement is a template in which ``{s}`` stands for the quoted schema name;
:meth:`Queries.for_schema` fills it in once per store (the name is checked by
:func:`~agentguard.storage._postgres.schema.quote_schema` first). Every value travels as a bind
parameter. Column order in every ``SELECT`` matches the decoders in ``_rows``.
"""

# Statements are composed only from the constants below and a schema name checked against a
# strict pattern; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Queries"]

_KEY_COLUMNS = """id, kind, key_hash, family_id, user_id, workspace_id, account_id,
    created_at, expires_at, revoked_at, revoked_reason, used_at, scope, jkt, audience"""
_KEY_UNNEST = """SELECT * FROM unnest(
    $1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::timestamptz[],
    $13::jsonb[], $14::text[], $15::text[])"""
_CREDENTIAL_COLUMNS = "service, owner_kind, owner_id, id, scope, ciphertext, key_id, created_at"
# A key of a revoked family reads as revoked (its own revocation, if any, came first).
_KEY_SELECT = """k.id, k.kind, k.key_hash, k.family_id, k.user_id, k.workspace_id, k.account_id,
    k.created_at, k.expires_at, coalesce(k.revoked_at, f.revoked_at),
    CASE WHEN k.revoked_at IS NULL THEN f.reason ELSE k.revoked_reason END,
    k.used_at, k.scope::text, k.jkt, k.audience"""
_FAMILY_REVOKED = "SELECT 1 FROM {s}.revoked_families AS f WHERE f.family_id = keys.family_id"
# Revocation: mark the families (a family, or every family with a key of the user; ordered, so
# concurrent revocations take the marks' index locks in one order), then revoke the unrevoked
# keys of the families this statement marked. A family marked before keeps its first time and
# reason: its keys read as revoked already. $1 now, $2 reason, $3 the family or user.
_REVOKE_FAMILIES = """
WITH marked AS (
    INSERT INTO {s}.revoked_families (family_id, revoked_at, reason)
    %s
    ON CONFLICT (family_id) DO NOTHING
    RETURNING family_id
), revoked AS (
    UPDATE {s}.keys SET revoked_at = $1, revoked_reason = $2
    WHERE family_id IN (SELECT family_id FROM marked) AND revoked_at IS NULL
    RETURNING 1
)
SELECT count(*) FROM revoked"""


@dataclass(frozen=True, slots=True)
class Queries:
    """Every statement the store runs, for one schema."""

    account_put: str = """
INSERT INTO {s}.accounts (id, name, status) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, status = excluded.status"""
    account_get: str = "SELECT id, name, status FROM {s}.accounts WHERE id = $1"

    # Both return no row when the record exists under another account.
    workspace_put: str = """
INSERT INTO {s}.workspaces (id, account_id, name) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET name = excluded.name
WHERE workspaces.account_id = excluded.account_id
RETURNING true"""
    workspace_get: str = "SELECT id, account_id, name FROM {s}.workspaces WHERE id = $1"

    user_put: str = """
INSERT INTO {s}.users (id, account_id, name, enabled, grants) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name, enabled = excluded.enabled, grants = excluded.grants
WHERE users.account_id = excluded.account_id
RETURNING true"""
    user_get: str = (
        "SELECT id, account_id, name, enabled, grants::text FROM {s}.users WHERE id = $1"
    )
    user_list: str = (
        'SELECT id, account_id, name, enabled, grants::text FROM {s}.users ORDER BY id COLLATE "C"'
    )
    user_list_account: str = """
SELECT id, account_id, name, enabled, grants::text FROM {s}.users
WHERE account_id = $1 ORDER BY id COLLATE "C\""""

    # One statement checks both ends, changes the membership, and reports both accounts.
    member_add: str = """
WITH u AS (SELECT account_id FROM {s}.users WHERE id = $1),
     w AS (SELECT account_id FROM {s}.workspaces WHERE id = $2),
     added AS (
        INSERT INTO {s}.memberships (user_id, workspace_id, account_id)
        SELECT $1, $2, u.account_id FROM u JOIN w ON w.account_id = u.account_id
        ON CONFLICT (user_id, workspace_id) DO NOTHING
     )
SELECT (SELECT account_id FROM u), (SELECT account_id FROM w)"""
    member_remove: str = """
WITH u AS (SELECT account_id FROM {s}.users WHERE id = $1),
     w AS (SELECT account_id FROM {s}.workspaces WHERE id = $2),
     removed AS (
        DELETE FROM {s}.memberships WHERE user_id = $1 AND workspace_id = $2
        AND EXISTS (SELECT 1 FROM u JOIN w ON w.account_id = u.account_id)
     )
SELECT (SELECT account_id FROM u), (SELECT account_id FROM w)"""
    member_get: str = "SELECT 1 FROM {s}.memberships WHERE user_id = $1 AND workspace_id = $2"

    key_insert: str = f"INSERT INTO {{s}}.keys ({_KEY_COLUMNS})\n{_KEY_UNNEST}"
    key_lookup: str = f"""
SELECT
    {_KEY_SELECT},
    u.id, u.account_id, u.name, u.enabled, u.grants::text,
    a.id, a.name, a.status,
    m.user_id IS NOT NULL
FROM {{s}}.keys AS k
LEFT JOIN {{s}}.revoked_families AS f ON f.family_id = k.family_id
LEFT JOIN {{s}}.users AS u ON u.id = k.user_id
LEFT JOIN {{s}}.accounts AS a ON a.id = k.account_id
LEFT JOIN {{s}}.memberships AS m ON m.user_id = k.user_id AND m.workspace_id = k.workspace_id
WHERE k.key_hash = $1"""
    # The conditional UPDATE takes the row lock; a concurrent rotation waits for it, then
    # re-checks used_at on the committed row and matches nothing. Inserts happen only if it won.
    # A rotation that misses a concurrent revocation's family mark (its snapshot is older)
    # still commits keys of a marked family, which every later lookup reads as revoked.
    key_rotate: str = f"""
WITH used AS (
    UPDATE {{s}}.keys SET used_at = $16
    WHERE id = $17 AND kind = 'refresh' AND used_at IS NULL AND revoked_at IS NULL
      AND NOT EXISTS ({_FAMILY_REVOKED})
    RETURNING 1
), inserted AS (
    INSERT INTO {{s}}.keys ({_KEY_COLUMNS})
    {_KEY_UNNEST}
    WHERE EXISTS (SELECT 1 FROM used)
)
SELECT count(*) FROM used"""
    key_list: str = f"""
SELECT {_KEY_SELECT}
FROM {{s}}.keys AS k
LEFT JOIN {{s}}.revoked_families AS f ON f.family_id = k.family_id
WHERE ($1::text IS NULL OR k.user_id = $1) AND ($2::text IS NULL OR k.family_id = $2)
ORDER BY k.pos"""
    revoke_key: str = f"""
UPDATE {{s}}.keys SET revoked_at = $1, revoked_reason = $2
WHERE id = $3 AND revoked_at IS NULL AND NOT EXISTS ({_FAMILY_REVOKED})"""
    revoke_family: str = _REVOKE_FAMILIES % "VALUES ($3, $1, $2)"
    revoke_user: str = _REVOKE_FAMILIES % (
        "SELECT DISTINCT family_id, $1::timestamptz, $2 FROM {s}.keys WHERE user_id = $3"
        " ORDER BY family_id"
    )

    # Takes over an expired key, never a live one, and forgets a few other expired keys.
    replay_claim: str = """
WITH purged AS (
    DELETE FROM {s}.replay WHERE key IN (
        SELECT key FROM {s}.replay WHERE expires_at <= $3 AND key <> $1
        ORDER BY expires_at LIMIT 64 FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO {s}.replay (key, expires_at) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
WHERE replay.expires_at <= $3
RETURNING true"""

    credential_put: str = f"""
INSERT INTO {{s}}.credentials ({_CREDENTIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (service, owner_kind, owner_id) DO UPDATE SET
    id = excluded.id, scope = excluded.scope, ciphertext = excluded.ciphertext,
    key_id = excluded.key_id, created_at = excluded.created_at"""
    credential_get: str = f"""
SELECT {_CREDENTIAL_COLUMNS} FROM {{s}}.credentials
WHERE service = $1 AND owner_kind = $2 AND owner_id = $3"""
    credential_delete: str = """
DELETE FROM {s}.credentials WHERE service = $1 AND owner_kind = $2 AND owner_id = $3
RETURNING true"""
    credential_list: str = f"""
SELECT {_CREDENTIAL_COLUMNS} FROM {{s}}.credentials
WHERE ($1::text IS NULL OR service = $1) ORDER BY id COLLATE "C", pos"""

    audit_lock_head: str = "SELECT seq, hash FROM {s}.audit_head FOR UPDATE"
    audit_append: str = """
WITH appended AS (
    INSERT INTO {s}.audit (seq, prev, hash, body)
    SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[])
)
UPDATE {s}.audit_head SET seq = $5, hash = $6"""
    audit_head: str = "SELECT seq, hash, body FROM {s}.audit ORDER BY seq DESC LIMIT 1"
    audit_read: str = """
SELECT seq, hash, body FROM {s}.audit
WHERE seq >= $1 AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq"""
    audit_archive_get: str = "SELECT prefix FROM {s}.audit_archive"
    audit_archive_lock: str = "SELECT prefix FROM {s}.audit_archive FOR UPDATE"
    audit_archive_put: str = """
INSERT INTO {s}.audit_archive (one, size, prefix) VALUES (true, $1, $2)
ON CONFLICT (one) DO UPDATE SET size = excluded.size, prefix = excluded.prefix"""
    audit_archive_drop: str = "DELETE FROM {s}.audit WHERE seq < $1"
    audit_hash_at: str = "SELECT hash FROM {s}.audit WHERE seq = $1"
    audit_head_seq: str = "SELECT seq FROM {s}.audit_head"

    @classmethod
    def for_schema(cls, quoted: str) -> Queries:
        """The statements with ``{s}`` replaced by ``quoted`` (an already quoted name)."""
        template = cls()
        return cls(
            **{
                field.name: getattr(template, field.name).replace("{s}", quoted)
                for field in dataclasses.fields(cls)
            }
        )
