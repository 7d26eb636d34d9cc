"""Storage protocols and the in-memory reference implementation.

``SQLiteStore`` (stdlib ``sqlite3``) is the embedded default. Backends for real servers live
in their own modules behind extras and import their driver lazily.
"""

from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore
from agentguard.storage._gate_protocols import (
    ApprovalStore,
    Charge,
    LimitStore,
    OperatorStore,
    RateDecision,
)
from agentguard.storage._memory import MemoryStore
from agentguard.storage._postgres import PostgresStore
from agentguard.storage._postgres import upgrade as upgrade_postgres
from agentguard.storage._protocols import (
    AuditArchiveStore,
    AuditStore,
    CredentialStore,
    DirectoryStore,
    IntegrityError,
    KeyLookup,
    KeyStore,
    ReplayCache,
    RevokeSelector,
    StorageError,
    revoke_selector,
)
from agentguard.storage._redis import RedisReplayCache
from agentguard.storage._redis_limits import RedisLimitStore
from agentguard.storage._revocation_feeds import AnnouncingStore, RevocationFeed, announce_changes
from agentguard.storage._sqlite import SchemaVersionError, SQLiteStore
from agentguard.storage._urls import open_store

__all__ = [
    "AnnouncingStore",
    "ApprovalStore",
    "AuditArchiveStore",
    "AuditStore",
    "Charge",
    "ConnectFlowStore",
    "ConnectionStore",
    "CredentialStore",
    "DirectoryStore",
    "IntegrityError",
    "KeyLookup",
    "KeyStore",
    "LimitStore",
    "MemoryStore",
    "OperatorStore",
    "PostgresStore",
    "RateDecision",
    "RedisLimitStore",
    "RedisReplayCache",
    "ReplayCache",
    "RevocationFeed",
    "RevokeSelector",
    "SQLiteStore",
    "SchemaVersionError",
    "StorageError",
    "announce_changes",
    "open_store",
    "revoke_selector",
    "upgrade_postgres",
]
