"""The embedded default storage backend: every storage protocol on one SQLite file.

``SQLiteStore("agentguard.db")`` needs no server and no extra: it uses the standard library's
``sqlite3``. Several processes may share the file (WAL mode; every write is one
``BEGIN IMMEDIATE`` transaction). See :class:`SQLiteStore` for the guarantees.
"""

from agentguard.storage._sqlite.schema import SCHEMA_VERSION, SchemaVersionError
from agentguard.storage._sqlite.store import SQLiteStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "SchemaVersionError"]
