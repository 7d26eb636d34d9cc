"""The SQL statements of the PostgreSQL connected accounts (connections, connect flows, leases).

Templates in which ``{s}`` stands for the quoted schema name, filled in once per store by
:meth:`ConnectionQueries.for_schema`, as :class:`~agentguard.storage._postgres._gate_queries.
GateQueries` does. Every value is a bind parameter; column order in every ``SELECT`` and
``RETURNING`` matches :class:`~agentguard.storage._connection_rows.ConnectionCodec`.
"""

# Statements are composed only from the constants below and a schema name checked against a
# strict pattern; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agentguard.storage._connection_rows import CONNECTION_COLUMNS, FLOW_COLUMNS

__all__ = ["PURGE_BATCH", "ConnectionQueries"]

PURGE_BATCH = 64
"""Most expired connect flows one ``put_flow`` forgets (the ``LIMIT`` in the statement)."""

_CONNECTION_VALUES = ", ".join(f"${n}" for n in range(1, 13))
_FLOW_VALUES = ", ".join(f"${n}" for n in range(1, 11))


@dataclass(frozen=True, slots=True)
class ConnectionQueries:
    """Every statement of connected accounts, for one schema."""

    # A reconnect replaces the slot's row, id included. An id used by another slot breaks the
    # unique index on id (the arbiter is the slot only) and raises a unique violation.
    connection_put: str = f"""
INSERT INTO {{s}}.connections ({CONNECTION_COLUMNS}) VALUES ({_CONNECTION_VALUES})
ON CONFLICT (service, user_id) DO UPDATE SET
    id = excluded.id, status = excluded.status, access_token = excluded.access_token,
    refresh_token = excluded.refresh_token, expires_at = excluded.expires_at,
    scopes = excluded.scopes, key_id = excluded.key_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at, version = excluded.version"""
    connection_get: str = (
        f"SELECT {CONNECTION_COLUMNS} FROM {{s}}.connections WHERE service = $1 AND user_id = $2"
    )
    # The compare-and-set ($1-$12 the new record, $13 the version read). A concurrent update
    # waits for the row lock, then re-checks this WHERE on the committed row and matches nothing.
    connection_update: str = """
UPDATE {s}.connections SET
    status = $4, access_token = $5, refresh_token = $6, expires_at = $7, scopes = $8,
    key_id = $9, created_at = $10, updated_at = $11, version = $12
WHERE id = $1 AND service = $2 AND user_id = $3 AND version = $13
RETURNING true"""
    connection_delete: str = f"""
DELETE FROM {{s}}.connections
WHERE service = $1 AND user_id = $2 AND ($3::text IS NULL OR id = $3)
RETURNING {CONNECTION_COLUMNS}"""
    connection_list: str = f"""
SELECT {CONNECTION_COLUMNS} FROM {{s}}.connections
WHERE ($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR user_id = $2)
ORDER BY service, user_id"""

    # $1-$10 the flow; $6, its created_at, also bounds what expired flows may be forgotten.
    flow_put: str = f"""
WITH purged AS (
    DELETE FROM {{s}}.connect_flows WHERE id IN (
        SELECT id FROM {{s}}.connect_flows WHERE expires_at <= $6
        ORDER BY expires_at LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO {{s}}.connect_flows ({FLOW_COLUMNS}) VALUES ({_FLOW_VALUES})"""
    flow_find: str = (
        f"SELECT {FLOW_COLUMNS} FROM {{s}}.connect_flows WHERE token_hash = $1 AND kind = $2"
    )
    # One DELETE ... RETURNING: a concurrent taker waits for the row lock, then finds it gone.
    flow_take: str = f"""
DELETE FROM {{s}}.connect_flows WHERE token_hash = $1 AND kind = $2
RETURNING {FLOW_COLUMNS}"""

    # Granted when free, run out (until <= now) or already the holder's: $1 name, $2 holder,
    # $3 now, $4 until. A conflicting row is locked and its newest committed value decides.
    lease_acquire: str = """
INSERT INTO {s}.leases AS l (name, holder, until) VALUES ($1, $2, $4)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE l.until <= $3 OR l.holder = $2
RETURNING true"""
    lease_release: str = "DELETE FROM {s}.leases WHERE name = $1 AND holder = $2 RETURNING true"

    @classmethod
    def for_schema(cls, quoted: str) -> ConnectionQueries:
        """The statements with ``{s}`` replaced by ``quoted`` (an already quoted name)."""
        template = cls()
        return cls(
            **{
                field.name: getattr(template, field.name).replace("{s}", quoted)
                for field in dataclasses.fields(cls)
            }
        )
