"""The SQL statements of the PostgreSQL gates (approvals, operators, budgets, rate limits).

Templates in which ``{s}`` stands for the quoted schema name, filled in once per store by
:meth:`GateQueries.for_schema`, as :class:`~agentguard.storage._postgres._queries.Queries`
does. Every value is a bind parameter; column order in every ``SELECT`` and ``RETURNING``
matches :class:`~agentguard.storage._gate_rows.GateCodec`.
"""

# Statements are composed only from the constants below and a schema name checked against a
# strict pattern; every value is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agentguard.storage._gate_rows import APPROVAL_COLUMNS, OPERATOR_COLUMNS

__all__ = ["PURGE_BATCH", "GateQueries"]

PURGE_BATCH = 64
"""Most expired counters or buckets one call forgets (the ``LIMIT`` in the statements)."""

# The types of the 23 approval columns: id .. body_digest, body_bytes, body_preview,
# rule_version, created_at, expires_at, decided_at, decided_by, consumed_at, headers.
_APPROVAL_TYPES = (
    ("text",) * 14
    + ("bigint", "text", "text")
    + ("timestamptz",) * 3
    + ("text", "timestamptz", "text")
)
_APPROVAL_VALUES = ", ".join(f"${n}::{kind}" for n, kind in enumerate(_APPROVAL_TYPES, 1))

# A counter or bucket keeps the outcome of its last change in ``allowed``: the upsert always
# writes the row it locked, so RETURNING reports the decision and the value it was made on (the
# newest committed one, which ON CONFLICT locks), in one statement, with no second read.


@dataclass(frozen=True, slots=True)
class GateQueries:
    """Every statement of the gates, for one schema."""

    # Run after the transaction-scoped advisory lock on the binding: the newest pending,
    # unexpired approval with this binding ($3), or else the insert. $24 is now.
    approval_create: str = f"""
WITH found AS (
    SELECT {APPROVAL_COLUMNS} FROM {{s}}.approvals
    WHERE binding = $3 AND status = 'pending' AND expires_at > $24::timestamptz
    ORDER BY created_at DESC, pos DESC LIMIT 1
), inserted AS (
    INSERT INTO {{s}}.approvals ({APPROVAL_COLUMNS})
    SELECT {_APPROVAL_VALUES} WHERE NOT EXISTS (SELECT 1 FROM found)
)
SELECT * FROM found"""
    approval_lock: str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
    approval_get: str = f"SELECT {APPROVAL_COLUMNS} FROM {{s}}.approvals WHERE id = $1"
    # The conditional UPDATEs take the row lock; a concurrent call waits, then re-checks the
    # committed row and matches nothing.
    approval_decide: str = f"""
UPDATE {{s}}.approvals SET status = $2, decided_at = $3, decided_by = $4
WHERE id = $1 AND status = 'pending' AND expires_at > $3
RETURNING {APPROVAL_COLUMNS}"""
    approval_consume: str = """
UPDATE {s}.approvals SET status = 'consumed', consumed_at = $3
WHERE id = $1 AND status = 'approved' AND binding = $2 AND expires_at > $3
  AND consumed_at IS NULL
RETURNING true"""
    approval_list: str = f"""
SELECT {APPROVAL_COLUMNS} FROM {{s}}.approvals
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR user_id = $2)
ORDER BY created_at DESC, pos DESC LIMIT $3"""

    operator_insert: str = (
        f"INSERT INTO {{s}}.operators ({OPERATOR_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    )
    operator_lookup: str = f"SELECT {OPERATOR_COLUMNS} FROM {{s}}.operators WHERE token_hash = $1"
    operator_revoke: str = """
UPDATE {s}.operators SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING true"""
    operator_list: str = f"SELECT {OPERATOR_COLUMNS} FROM {{s}}.operators ORDER BY created_at, pos"

    # $1 counter, $2 cost, $3 limit, $4 expires_at, $5 the store clock's now (purge only).
    charge: str = f"""
WITH purged AS (
    DELETE FROM {{s}}.limit_counters WHERE name IN (
        SELECT name FROM {{s}}.limit_counters WHERE expires_at < $5 AND name <> $1
        ORDER BY expires_at LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO {{s}}.limit_counters AS c (name, used, expires_at, allowed)
VALUES (
    $1, CASE WHEN $2::bigint <= $3::bigint THEN $2::bigint ELSE 0 END, $4,
    $2::bigint <= $3::bigint
)
ON CONFLICT (name) DO UPDATE SET
    used = CASE WHEN c.used + $2::bigint <= $3::bigint THEN c.used + $2::bigint ELSE c.used END,
    expires_at = greatest(c.expires_at, excluded.expires_at),
    allowed = c.used + $2::bigint <= $3::bigint
RETURNING allowed, used"""

    # GCRA in microseconds: $1 bucket, $2 now, $3 interval, $4 burst * interval. A bucket whose
    # tat has passed decides like a fresh one, so forgetting it changes nothing.
    take: str = f"""
WITH purged AS (
    DELETE FROM {{s}}.rate_buckets WHERE name IN (
        SELECT name FROM {{s}}.rate_buckets WHERE tat <= $2::bigint AND name <> $1
        ORDER BY tat LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO {{s}}.rate_buckets AS b (name, tat, allowed)
VALUES (
    $1, $2::bigint + CASE WHEN $3::bigint <= $4::bigint THEN $3::bigint ELSE 0 END,
    $3::bigint <= $4::bigint
)
ON CONFLICT (name) DO UPDATE SET
    tat = CASE WHEN greatest(b.tat, $2::bigint) + $3::bigint - $2::bigint <= $4::bigint
               THEN greatest(b.tat, $2::bigint) + $3::bigint ELSE b.tat END,
    allowed = greatest(b.tat, $2::bigint) + $3::bigint - $2::bigint <= $4::bigint
RETURNING allowed, tat"""

    @classmethod
    def for_schema(cls, quoted: str) -> GateQueries:
        """The statements with ``{s}`` replaced by ``quoted`` (an already quoted name)."""
        template = cls()
        return cls(
            **{
                field.name: getattr(template, field.name).replace("{s}", quoted)
                for field in dataclasses.fields(cls)
            }
        )
