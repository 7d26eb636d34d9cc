"""Revocation events from PostgreSQL itself: triggers that ``pg_notify`` what changed.

Open streams are re-checked on an interval; these triggers make a revocation reach every
instance at once. Each change that can end a stream sends a small JSON payload on the schema's
channel (:func:`channel_for`), delivered to listeners when the writing transaction commits:

=====================  =====================================  ===============================
table                  fires on                               payload
=====================  =====================================  ===============================
``keys``               ``revoked_at`` or ``expires_at``       ``{"table":"keys","user_id":…}``
                       changed, or the row deleted
``revoked_families``   a family revoked                       ``{"table":…,"family_id":…}``
``users``              any update, or the row deleted         ``{"table":"users","user_id":…}``
``memberships``        the row deleted (membership removed)   ``{"table":…,"user_id":…}``
``accounts``           any update, or the row deleted         ``{"table":…,"account_id":…}``
=====================  =====================================  ===============================

Keys are named by their user, so revoking every key of a user sends one notification
(PostgreSQL drops identical payloads within a transaction). The payload names ids only, never
a hash. Whoever writes (this library, the operator CLI, SQL run by hand) notifies alike,
because the database does it.

The statements are idempotent (``CREATE OR REPLACE``, ``DROP TRIGGER IF EXISTS``), with
``{s}`` for the quoted schema, as the migrations in :mod:`.schema` are written.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHANNEL_PREFIX", "NOTIFY_STATEMENTS", "channel_for", "install_notify"]

CHANNEL_PREFIX = "agentguard_revocations_"
"""The channel of schema ``s`` is this prefix and ``s``, cut to PostgreSQL's 63 bytes."""

_MAX_CHANNEL = 63

_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.notify_revocation() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $$
    DECLARE
        changed jsonb;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            changed := to_jsonb(OLD);
        ELSE
            changed := to_jsonb(NEW);
        END IF;
        PERFORM pg_notify(
            left('agentguard_revocations_' || TG_TABLE_SCHEMA, 63),
            json_build_object('table', TG_TABLE_NAME, TG_ARGV[0], changed ->> TG_ARGV[1])::text
        );
        RETURN NULL;
    END $$"""

# (trigger name, table, events and condition, the id the payload names)
_TRIGGERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "keys_notify_revocation",
        "keys",
        "AFTER UPDATE OF revoked_at, expires_at ON {s}.keys FOR EACH ROW "
        "WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at"
        " OR OLD.expires_at IS DISTINCT FROM NEW.expires_at)",
        "user_id",
    ),
    ("keys_notify_delete", "keys", "AFTER DELETE ON {s}.keys FOR EACH ROW", "user_id"),
    (
        "revoked_families_notify",
        "revoked_families",
        "AFTER INSERT OR UPDATE ON {s}.revoked_families FOR EACH ROW",
        "family_id",
    ),
    ("users_notify", "users", "AFTER UPDATE OR DELETE ON {s}.users FOR EACH ROW", "user_id"),
    (
        "memberships_notify",
        "memberships",
        "AFTER DELETE ON {s}.memberships FOR EACH ROW",
        "user_id",
    ),
    (
        "accounts_notify",
        "accounts",
        "AFTER UPDATE OR DELETE ON {s}.accounts FOR EACH ROW",
        "account_id",
    ),
)


def _trigger_statements() -> tuple[str, ...]:
    statements: list[str] = []
    for name, table, when, field in _TRIGGERS:
        column = "id" if table in ("accounts", "users") else field  # the id, from this column
        statements.append(f"DROP TRIGGER IF EXISTS {name} ON {{s}}.{table}")
        statements.append(
            f"CREATE TRIGGER {name} {when} "
            f"EXECUTE FUNCTION {{s}}.notify_revocation('{field}', '{column}')"
        )
    return tuple(statements)


NOTIFY_STATEMENTS: tuple[str, ...] = (_FUNCTION, *_trigger_statements())
"""The DDL of the revocation triggers, ``{s}`` standing for the quoted schema; idempotent."""


def channel_for(schema: str) -> str:
    """The ``LISTEN`` channel the triggers of ``schema`` notify on."""
    from agentguard.storage._postgres.schema import quote_schema  # schema.py imports us

    quote_schema(schema)  # a plain identifier, checked like everywhere else
    return (CHANNEL_PREFIX + schema)[:_MAX_CHANNEL]


async def install_notify(connection: Any, schema: str) -> None:
    """Create (or replace) the revocation triggers in ``schema`` over an ``asyncpg``
    connection, in one transaction. The schema's tables must exist."""
    from agentguard.storage._postgres.schema import quote_schema

    quoted = quote_schema(schema)
    async with connection.transaction():
        for statement in NOTIFY_STATEMENTS:
            await connection.execute(statement.format(s=quoted))
