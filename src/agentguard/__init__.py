"""agentguard: let AI agents act through real APIs without being trusted.

The agent holds placeholder keys; every call is resolved live against storage, checked
against the owning user's current grants, and recorded in a hash-chained audit log.

``import agentguard`` imports nothing but the version: every name below is imported from its
module on first use, so the pytest plugin, the CLI's ``--help`` and an app that needs one
submodule do not pay for the rest (``import agentguard`` costs about a millisecond).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentguard._version import __version__

if TYPE_CHECKING:
    from agentguard.asgi import AgentGuardMiddleware, OAuthApp
    from agentguard.asgi.proxy import ProxyApp
    from agentguard.client import AgentAuth
    from agentguard.clock import Clock, SystemClock
    from agentguard.context import current_principal
    from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
    from agentguard.dpop import DPoPKey, DPoPPolicy
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
        RequestRefused,
        ServiceUnavailable,
        StoreUnavailable,
        UsageError,
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
    "RequestRefused",
    "Requirement",
    "RouteRule",
    "SQLiteStore",
    "Secret",
    "ServiceConfig",
    "ServiceUnavailable",
    "StoreUnavailable",
    "SystemClock",
    "UsageError",
    "User",
    "Workspace",
    "__version__",
    "current_principal",
    "generate_key",
    "hash_key",
    "parse_key",
]

_LAZY: dict[str, str] = {
    "Account": "agentguard.model",
    "AccountStatus": "agentguard.model",
    "AgentAuth": "agentguard.client",
    "AgentGuardError": "agentguard.errors",
    "AgentGuardMiddleware": "agentguard.asgi",
    "AgentGuardWSGIMiddleware": "agentguard.wsgi",
    "AuditUnavailable": "agentguard.errors",
    "AuthenticationError": "agentguard.errors",
    "Clock": "agentguard.clock",
    "ConfigurationError": "agentguard.errors",
    "CredentialSwapper": "agentguard.credentials",
    "CredentialVault": "agentguard.credentials",
    "DPoPKey": "agentguard.dpop",
    "DPoPPolicy": "agentguard.dpop",
    "Grants": "agentguard.model",
    "Guard": "agentguard.guard",
    "GuardRequest": "agentguard.request",
    "InsufficientScope": "agentguard.errors",
    "InvalidGrant": "agentguard.errors",
    "InvalidRequest": "agentguard.errors",
    "InvalidToken": "agentguard.errors",
    "IssuanceRefused": "agentguard.errors",
    "IssuedKeys": "agentguard.model",
    "KeyIssuer": "agentguard.keys",
    "KeyKind": "agentguard.model",
    "KeyRecord": "agentguard.model",
    "KeyResolver": "agentguard.resolver",
    "KeyRing": "agentguard.credentials",
    "Level": "agentguard.model",
    "MalformedKey": "agentguard.errors",
    "Membership": "agentguard.model",
    "MemoryStore": "agentguard.storage",
    "MissingCredentials": "agentguard.errors",
    "OAuthApp": "agentguard.asgi",
    "PermissionChecker": "agentguard.permissions",
    "Placement": "agentguard.services",
    "PostgresStore": "agentguard.storage",
    "Principal": "agentguard.model",
    "ProxyApp": "agentguard.asgi.proxy",
    "Reason": "agentguard.errors",
    "RequestRefused": "agentguard.errors",
    "Requirement": "agentguard.permissions",
    "RouteRule": "agentguard.permissions",
    "SQLiteStore": "agentguard.storage",
    "Secret": "agentguard.secret",
    "ServiceConfig": "agentguard.services",
    "ServiceUnavailable": "agentguard.errors",
    "StoreUnavailable": "agentguard.errors",
    "SystemClock": "agentguard.clock",
    "UsageError": "agentguard.errors",
    "User": "agentguard.model",
    "Workspace": "agentguard.model",
    "current_principal": "agentguard.context",
    "generate_key": "agentguard.keys",
    "hash_key": "agentguard.keys",
    "parse_key": "agentguard.keys",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'agentguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
