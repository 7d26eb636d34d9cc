"""The SQL statements of the SQLite gates (approvals, operators, budgets, rate limits).

Column order in every ``SELECT`` matches :class:`~agentguard.storage._gate_rows.GateCodec`.
"""

# Statements are composed only from the constants below; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

from agentguard.storage._gate_rows import APPROVAL_COLUMNS, OPERATOR_COLUMNS

__all__ = [
    "APPROVAL_CONSUME",
    "APPROVAL_DECIDE",
    "APPROVAL_GET",
    "APPROVAL_INSERT",
    "APPROVAL_LIST",
    "APPROVAL_PENDING",
    "BUCKET_GET",
    "BUCKET_PURGE",
    "BUCKET_PUT",
    "COUNTER_GET",
    "COUNTER_PURGE",
    "COUNTER_PUT",
    "OPERATOR_INSERT",
    "OPERATOR_LIST",
    "OPERATOR_LOOKUP",
    "OPERATOR_REVOKE",
    "PURGE_BATCH",
]

PURGE_BATCH = 64
"""Most expired counters or buckets one call forgets."""

APPROVAL_INSERT = f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ({', '.join('?' * 23)})"
APPROVAL_GET = f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
# The newest pending, unexpired approval for a binding (there is at most one unless a database
# was written by hand). ? binding, ? now.
APPROVAL_PENDING = f"""
SELECT {APPROVAL_COLUMNS} FROM approvals
WHERE binding = ? AND status = 'pending' AND expires_at > ?
ORDER BY created_at DESC, pos DESC LIMIT 1"""
APPROVAL_DECIDE = """
UPDATE approvals SET status = :status, decided_at = :now, decided_by = :by
WHERE id = :id AND status = 'pending' AND expires_at > :now"""
APPROVAL_CONSUME = """
UPDATE approvals SET status = 'consumed', consumed_at = :now
WHERE id = :id AND status = 'approved' AND binding = :binding AND expires_at > :now
  AND consumed_at IS NULL"""
APPROVAL_LIST = f"""
SELECT {APPROVAL_COLUMNS} FROM approvals
WHERE (:status IS NULL OR status = :status) AND (:user_id IS NULL OR user_id = :user_id)
ORDER BY created_at DESC, pos DESC LIMIT :limit"""

OPERATOR_INSERT = f"INSERT INTO operators ({OPERATOR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
OPERATOR_LOOKUP = f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE token_hash = ?"
OPERATOR_REVOKE = "UPDATE operators SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
OPERATOR_LIST = f"SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY created_at, pos"

# ? now, ? the counter being charged (never purged by its own call), ? batch.
COUNTER_PURGE = """
DELETE FROM limit_counters WHERE name IN (
    SELECT name FROM limit_counters WHERE expires_at < ? AND name <> ?
    ORDER BY expires_at LIMIT ?
)"""
COUNTER_GET = "SELECT used FROM limit_counters WHERE name = ?"
COUNTER_PUT = """
INSERT INTO limit_counters (name, used, expires_at) VALUES (:name, :used, :expires_at)
ON CONFLICT (name) DO UPDATE SET
    used = excluded.used, expires_at = max(limit_counters.expires_at, excluded.expires_at)"""

# A bucket whose tat has passed is a fresh bucket: forgetting it changes no decision.
BUCKET_PURGE = """
DELETE FROM rate_buckets WHERE name IN (
    SELECT name FROM rate_buckets WHERE tat <= ? AND name <> ? ORDER BY tat LIMIT ?
)"""
BUCKET_GET = "SELECT tat FROM rate_buckets WHERE name = ?"
BUCKET_PUT = """
INSERT INTO rate_buckets (name, tat) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET tat = excluded.tat"""
