"""agentguard: let AI agents act through real APIs without being trusted.

The agent holds placeholder keys; every call is resolved live against storage, checked
against the owning user's current grants, and recorded in a hash-chained audit log.

``import agentguard`` loads no web framework: the ASGI names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentguard._version import __version__
from agentguard.clock import Clock, SystemClock
from agentguard.context import current_principal
from agentguard.errors import (
    AgentGuardError,
    AuditUnavailable,
    AuthenticationError,
    ConfigurationError,
    InsufficientScope,
    InvalidGrant,
    InvalidRequest,
    InvalidToken,
    IssuanceRefused,
    MalformedKey,
    MissingCredentials,
    Reason,
    ServiceUnavailable,
    StoreUnavailable,
)
from agentguard.guard import Guard
from agentguard.keys import KeyIssuer, generate_key, hash_key, parse_key
from agentguard.model import (
    Account,
    AccountStatus,
    Grants,
    IssuedKeys,
    KeyKind,
    KeyRecord,
    Level,
    Membership,
    Principal,
    User,
    Workspace,
)
from agentguard.permissions import PermissionChecker, Requirement, RouteRule
from agentguard.request import GuardRequest
from agentguard.resolver import KeyResolver
from agentguard.secret import Secret
from agentguard.services import Placement, ServiceConfig
from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore

if TYPE_CHECKING:
    from agentguard.asgi import AgentGuardMiddleware, OAuthApp
    from agentguard.asgi.proxy import ProxyApp
    from agentguard.client import AgentAuth
    from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
    from agentguard.dpop import DPoPKey, DPoPPolicy
    from agentguard.wsgi import AgentGuardWSGIMiddleware

__all__ = [
    "Account",
    "AccountStatus",
    "AgentAuth",
    "AgentGuardError",
    "AgentGuardMiddleware",
    "AgentGuardWSGIMiddleware",
    "AuditUnavailable",
    "AuthenticationError",
    "Clock",
    "ConfigurationError",
    "CredentialSwapper",
    "CredentialVault",
    "DPoPKey",
    "DPoPPolicy",
    "Grants",
    "Guard",
    "GuardRequest",
    "InsufficientScope",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidToken",
    "IssuanceRefused",
    "IssuedKeys",
    "KeyIssuer",
    "KeyKind",
    "KeyRecord",
    "KeyResolver",
    "KeyRing",
    "Level",
    "MalformedKey",
    "Membership",
    "MemoryStore",
    "MissingCredentials",
    "OAuthApp",
    "PermissionChecker",
    "Placement",
    "PostgresStore",
    "Principal",
    "ProxyApp",
    "Reason",
    "Requirement",
    "RouteRule",
    "SQLiteStore",
    "Secret",
    "ServiceConfig",
    "ServiceUnavailable",
    "StoreUnavailable",
    "SystemClock",
    "User",
    "Workspace",
    "__version__",
    "current_principal",
    "generate_key",
    "hash_key",
    "parse_key",
]

_LAZY = {
    "AgentAuth": "agentguard.client",
    "AgentGuardMiddleware": "agentguard.asgi",
    "AgentGuardWSGIMiddleware": "agentguard.wsgi",
    "CredentialSwapper": "agentguard.credentials",
    "CredentialVault": "agentguard.credentials",
    "KeyRing": "agentguard.credentials",
    "ProxyApp": "agentguard.asgi.proxy",
    "DPoPKey": "agentguard.dpop",
    "DPoPPolicy": "agentguard.dpop",
    "OAuthApp": "agentguard.asgi",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'agentguard' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
