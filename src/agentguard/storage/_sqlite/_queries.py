"""The SQL statements of :class:`~agentguard.storage.SQLiteStore`, spelled out.

Column order in every ``SELECT`` matches the decoders in ``_rows``.
"""

# Statements are composed only from the constants below; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

__all__ = [
    "ACCOUNT_GET",
    "ACCOUNT_PUT",
    "AUDIT_APPEND",
    "AUDIT_ARCHIVE_DROP",
    "AUDIT_ARCHIVE_GET",
    "AUDIT_ARCHIVE_PUT",
    "AUDIT_HASH_AT",
    "AUDIT_HEAD",
    "AUDIT_READ",
    "AUDIT_READ_TO",
    "CREDENTIAL_DELETE",
    "CREDENTIAL_GET",
    "CREDENTIAL_LIST",
    "CREDENTIAL_LIST_SERVICE",
    "CREDENTIAL_PUT",
    "KEY_INSERT",
    "KEY_LIST",
    "KEY_LOOKUP",
    "KEY_ROTATE_MARK",
    "MARK_FAMILIES",
    "MEMBER_ADD",
    "MEMBER_GET",
    "MEMBER_REMOVE",
    "REPLAY_CLAIM",
    "REPLAY_PURGE",
    "REVOKE_BY",
    "USER_ACCOUNT",
    "USER_GET",
    "USER_LIST",
    "USER_LIST_ACCOUNT",
    "USER_PUT",
    "WORKSPACE_ACCOUNT",
    "WORKSPACE_GET",
    "WORKSPACE_PUT",
]

ACCOUNT_PUT = """
INSERT INTO accounts (id, name, status) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, status = excluded.status
"""
ACCOUNT_GET = "SELECT id, name, status FROM accounts WHERE id = ?"

WORKSPACE_PUT = """
INSERT INTO workspaces (id, account_id, name) VALUES (?, ?, ?)
ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, name = excluded.name
"""
WORKSPACE_GET = "SELECT id, account_id, name FROM workspaces WHERE id = ?"
WORKSPACE_ACCOUNT = "SELECT account_id FROM workspaces WHERE id = ?"

USER_PUT = """
INSERT INTO users (id, account_id, name, enabled, grants) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    account_id = excluded.account_id,
    name = excluded.name,
    enabled = excluded.enabled,
    grants = excluded.grants
"""
USER_GET = "SELECT id, account_id, name, enabled, grants FROM users WHERE id = ?"
USER_ACCOUNT = "SELECT account_id FROM users WHERE id = ?"
USER_LIST = "SELECT id, account_id, name, enabled, grants FROM users ORDER BY id"
USER_LIST_ACCOUNT = (
    "SELECT id, account_id, name, enabled, grants FROM users WHERE account_id = ? ORDER BY id"
)

MEMBER_ADD = "INSERT OR IGNORE INTO memberships (user_id, workspace_id) VALUES (?, ?)"
MEMBER_REMOVE = "DELETE FROM memberships WHERE user_id = ? AND workspace_id = ?"
MEMBER_GET = "SELECT 1 FROM memberships WHERE user_id = ? AND workspace_id = ?"

KEY_INSERT = """
INSERT INTO keys (
    id, kind, key_hash, family_id, user_id, workspace_id, account_id,
    created_at, expires_at, revoked_at, revoked_reason, used_at, scope, jkt, audience
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# A key of a revoked family reads as revoked (its own revocation, if any, came first).
_EFFECTIVE_REVOCATION = """
    coalesce(k.revoked_at, f.revoked_at),
    CASE WHEN k.revoked_at IS NULL THEN f.reason ELSE k.revoked_reason END"""
_KEY_SELECT = f"""
    k.id, k.kind, k.key_hash, k.family_id, k.user_id, k.workspace_id, k.account_id,
    k.created_at, k.expires_at,{_EFFECTIVE_REVOCATION}, k.used_at, k.scope, k.jkt,
    k.audience"""
_FAMILY_REVOKED = "SELECT 1 FROM revoked_families AS f WHERE f.family_id = keys.family_id"

KEY_LOOKUP = f"""
SELECT{_KEY_SELECT},
    u.id, u.account_id, u.name, u.enabled, u.grants,
    a.id, a.name, a.status,
    m.user_id IS NOT NULL
FROM keys AS k
LEFT JOIN revoked_families AS f ON f.family_id = k.family_id
LEFT JOIN users AS u ON u.id = k.user_id
LEFT JOIN accounts AS a ON a.id = k.account_id
LEFT JOIN memberships AS m ON m.user_id = k.user_id AND m.workspace_id = k.workspace_id
WHERE k.key_hash = ?
"""

KEY_ROTATE_MARK = f"""
UPDATE keys SET used_at = ?
WHERE id = ? AND kind = 'refresh' AND used_at IS NULL AND revoked_at IS NULL
  AND NOT EXISTS ({_FAMILY_REVOKED})
"""

KEY_LIST = f"""
SELECT{_KEY_SELECT}
FROM keys AS k
LEFT JOIN revoked_families AS f ON f.family_id = k.family_id
WHERE (:user_id IS NULL OR k.user_id = :user_id)
  AND (:family_id IS NULL OR k.family_id = :family_id)
ORDER BY k.pos
"""

# Each revocation is an UPDATE of the unrevoked keys of families not yet marked (a marked
# family's keys are revoked already, at the family's time), then, for a family or a user, the
# INSERT of the marks; both in one write transaction. Parameters: :now, :reason, :value.
_REVOKE_ROWS = f"""
UPDATE keys SET revoked_at = :now, revoked_reason = :reason
WHERE %s AND revoked_at IS NULL AND NOT EXISTS ({_FAMILY_REVOKED})
"""
REVOKE_BY: dict[str, str] = {
    "key_id": _REVOKE_ROWS % "id = :value",
    "family_id": _REVOKE_ROWS % "family_id = :value",
    "user_id": _REVOKE_ROWS
    % "family_id IN (SELECT family_id FROM keys AS owned WHERE owned.user_id = :value)",
}
MARK_FAMILIES: dict[str, str] = {
    "family_id": """
INSERT INTO revoked_families (family_id, revoked_at, reason) VALUES (:value, :now, :reason)
ON CONFLICT (family_id) DO NOTHING
""",
    "user_id": """
INSERT INTO revoked_families (family_id, revoked_at, reason)
SELECT DISTINCT family_id, :now, :reason FROM keys WHERE user_id = :value
ON CONFLICT (family_id) DO NOTHING
""",
}

REPLAY_PURGE = """
DELETE FROM replay WHERE key IN (
    SELECT key FROM replay WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
)
"""
# Inserts a fresh key, or takes over an expired one; changes no row while the key is live.
REPLAY_CLAIM = """
INSERT INTO replay (key, expires_at) VALUES (:key, :expires_at)
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
WHERE replay.expires_at <= :now
"""

CREDENTIAL_PUT = """
INSERT INTO credentials (service, owner_kind, owner_id, id, scope, ciphertext, key_id, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, owner_kind, owner_id) DO UPDATE SET
    id = excluded.id,
    scope = excluded.scope,
    ciphertext = excluded.ciphertext,
    key_id = excluded.key_id,
    created_at = excluded.created_at
"""
CREDENTIAL_GET = """
SELECT service, owner_kind, owner_id, id, scope, ciphertext, key_id, created_at FROM credentials
WHERE service = ? AND owner_kind = ? AND owner_id = ?
"""
CREDENTIAL_DELETE = "DELETE FROM credentials WHERE service = ? AND owner_kind = ? AND owner_id = ?"
CREDENTIAL_LIST = """
SELECT service, owner_kind, owner_id, id, scope, ciphertext, key_id, created_at FROM credentials
ORDER BY id, pos
"""
CREDENTIAL_LIST_SERVICE = """
SELECT service, owner_kind, owner_id, id, scope, ciphertext, key_id, created_at FROM credentials
WHERE service = ? ORDER BY id, pos
"""

AUDIT_APPEND = "INSERT INTO audit (seq, prev, hash, body) VALUES (?, ?, ?, ?)"
AUDIT_HEAD = "SELECT seq, hash, body FROM audit ORDER BY seq DESC LIMIT 1"
AUDIT_READ = "SELECT seq, hash, body FROM audit WHERE seq >= ? ORDER BY seq"
AUDIT_READ_TO = "SELECT seq, hash, body FROM audit WHERE seq >= ? AND seq < ? ORDER BY seq"
AUDIT_ARCHIVE_GET = "SELECT prefix FROM audit_archive WHERE one = 1"
AUDIT_ARCHIVE_PUT = "INSERT OR REPLACE INTO audit_archive (one, size, prefix) VALUES (1, ?, ?)"
AUDIT_ARCHIVE_DROP = "DELETE FROM audit WHERE seq < ?"
AUDIT_HASH_AT = "SELECT hash FROM audit WHERE seq = ?"
