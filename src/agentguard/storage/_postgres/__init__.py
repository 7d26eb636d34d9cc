"""PostgreSQL backend (extra ``agentguard[postgres]``): every storage protocol on one database.

``PostgresStore("postgresql://app@db/agentguard")`` keeps all state in one PostgreSQL schema
shared by every app instance; :func:`upgrade` creates or migrates that schema (the store does it
on first use unless told not to). The driver, ``asyncpg``, is imported only when a store opens.
"""

from agentguard.storage._postgres.schema import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    SchemaVersionError,
    upgrade,
)
from agentguard.storage._postgres.store import PostgresStore

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStore", "SchemaVersionError", "upgrade"]
