"""Writing rows the way an older schema had them, for migration tests."""

from __future__ import annotations

import sqlite3

from agentguard._model import KeyRecord
from agentguard.storage._sqlite._rows import key_params

#: The ``keys`` columns of schema versions 2 to 5 (version 6 added ``audience``).
_OLD_KEY_COLUMNS = (
    "id, kind, key_hash, family_id, user_id, workspace_id, account_id, created_at, expires_at,"
    " revoked_at, revoked_reason, used_at, scope, jkt"
)


def insert_pre_audience_key(connection: sqlite3.Connection, record: KeyRecord) -> None:
    """Insert ``record`` into a ``keys`` table that has no ``audience`` column yet."""
    connection.execute(
        f"INSERT INTO keys ({_OLD_KEY_COLUMNS}) VALUES ({', '.join('?' * 14)})",  # noqa: S608
        key_params(record)[:14],
    )
