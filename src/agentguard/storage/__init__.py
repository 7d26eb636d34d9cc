"""Storage protocols and the in-memory reference implementation.

Backends for real servers live in their own modules behind extras and import their driver
lazily.
"""

from agentguard.storage.memory import MemoryStore
from agentguard.storage.protocols import (
    AuditStore,
    CredentialStore,
    DirectoryStore,
    IntegrityError,
    KeyLookup,
    KeyStore,
    ReplayCache,
    StorageError,
)

__all__ = [
    "AuditStore",
    "CredentialStore",
    "DirectoryStore",
    "IntegrityError",
    "KeyLookup",
    "KeyStore",
    "MemoryStore",
    "ReplayCache",
    "StorageError",
]
