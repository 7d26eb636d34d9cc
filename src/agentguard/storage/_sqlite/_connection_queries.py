"""The SQL statements of the SQLite connected accounts (connections, connect flows, leases).

Column order in every ``SELECT`` matches
:class:`~agentguard.storage._connection_rows.ConnectionCodec`.
"""

# Statements are composed only from the constants below; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

from agentguard.storage._connection_rows import CONNECTION_COLUMNS, FLOW_COLUMNS

__all__ = [
    "CONNECTION_DELETE",
    "CONNECTION_GET",
    "CONNECTION_LIST",
    "CONNECTION_PUT",
    "CONNECTION_UPDATE",
    "FLOW_DELETE",
    "FLOW_FIND",
    "FLOW_INSERT",
    "FLOW_PURGE",
    "LEASE_ACQUIRE",
    "LEASE_RELEASE",
    "PURGE_BATCH",
]

PURGE_BATCH = 64
"""Most expired connect flows one ``put_flow`` forgets."""

# A reconnect replaces the slot's row, id included; an id already used by another slot breaks
# the unique index on id (the conflict target is the slot only) and raises.
CONNECTION_PUT = f"""
INSERT INTO connections ({CONNECTION_COLUMNS}) VALUES ({", ".join("?" * 12)})
ON CONFLICT (service, user_id) DO UPDATE SET
    id = excluded.id, status = excluded.status, access_token = excluded.access_token,
    refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
    scopes = excluded.scopes, key_id = excluded.key_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at, version = excluded.version"""
CONNECTION_GET = f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE service = ? AND user_id = ?"
# The compare-and-set: the slot, the connection's id and the version read must all still match.
CONNECTION_UPDATE = """
UPDATE connections SET
    status = :status, access_token = :access_token, refresh_token = :refresh_token,
    expires_at = :expires_at, scopes = :scopes, key_id = :key_id, created_at = :created_at,
    updated_at = :updated_at, version = :version
WHERE service = :service AND user_id = :user_id AND id = :id AND version = :expected"""
CONNECTION_DELETE = "DELETE FROM connections WHERE service = ? AND user_id = ?"
CONNECTION_LIST = f"""
SELECT {CONNECTION_COLUMNS} FROM connections
WHERE (:service IS NULL OR service = :service) AND (:user_id IS NULL OR user_id = :user_id)
ORDER BY service, user_id"""

# ? created_at of the flow being stored, ? batch.
FLOW_PURGE = """
DELETE FROM connect_flows WHERE id IN (
    SELECT id FROM connect_flows WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
)"""
FLOW_INSERT = f"INSERT INTO connect_flows ({FLOW_COLUMNS}) VALUES ({', '.join('?' * 10)})"
FLOW_FIND = f"SELECT {FLOW_COLUMNS} FROM connect_flows WHERE token_hash = ? AND kind = ?"
FLOW_DELETE = "DELETE FROM connect_flows WHERE id = ?"

# Granted when free, run out (until <= now) or already the holder's; rowcount 1 if granted.
LEASE_ACQUIRE = """
INSERT INTO leases (name, holder, until) VALUES (:name, :holder, :until)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE leases.until <= :now OR leases.holder = :holder"""
LEASE_RELEASE = "DELETE FROM leases WHERE name = ? AND holder = ?"
