"""agentguard: let AI agents act through real APIs without being trusted.

The agent holds placeholder keys; every call is resolved live against storage, checked
against the owning user's current grants, and recorded in a hash-chained audit log.

This package holds the core: the :class:`Guard` and its :class:`Passage`, the directory and key
models, permissions, services. Everything else has one home of its own: the adapters in
:mod:`agentguard.asgi`, :mod:`agentguard.wsgi` and :mod:`agentguard.integrations`, the agent
runtime in :mod:`agentguard.client`, errors in :mod:`agentguard.errors`, stores in
:mod:`agentguard.storage`, then :mod:`agentguard.dpop`, :mod:`agentguard.credentials`,
:mod:`agentguard.review`, :mod:`agentguard.audit`, :mod:`agentguard.resolvers`,
:mod:`agentguard.testing`. Each public name is importable from exactly one of them.

``import agentguard`` imports nothing but the version: every name below is imported from its
module on first use, so the pytest plugin, the CLI's ``--help`` and an app that needs one
submodule do not pay for the rest (``import agentguard`` costs about a millisecond).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentguard._version import __version__

if TYPE_CHECKING:
    from agentguard._clock import Clock, SystemClock
    from agentguard._context import current_principal
    from agentguard._guard import Guard, Passage, ResponseReview, Reviews
    from agentguard._keys import (
        DEFAULT_ACCESS_TTL,
        DEFAULT_REFRESH_TTL,
        KeyIssuer,
        ParsedKey,
        generate_key,
        hash_key,
        looks_like_key,
        parse_key,
    )
    from agentguard._model import (
        Account,
        AccountStatus,
        CredentialOwner,
        CredentialScope,
        Grants,
        IssuedKeys,
        KeyKind,
        KeyRecord,
        Level,
        Membership,
        Principal,
        StoredCredential,
        User,
        Workspace,
    )
    from agentguard._permissions import PermissionChecker, Requirement, RouteRule
    from agentguard._request import Credentials, GuardRequest
    from agentguard._resolver import KeyResolver, TokenResolver
    from agentguard._secret import Secret
    from agentguard._services import Placement, ServiceConfig, ServiceRoute, ServiceTimeouts

__all__ = [
    "DEFAULT_ACCESS_TTL",
    "DEFAULT_REFRESH_TTL",
    "Account",
    "AccountStatus",
    "Clock",
    "CredentialOwner",
    "CredentialScope",
    "Credentials",
    "Grants",
    "Guard",
    "GuardRequest",
    "IssuedKeys",
    "KeyIssuer",
    "KeyKind",
    "KeyRecord",
    "KeyResolver",
    "Level",
    "Membership",
    "ParsedKey",
    "Passage",
    "PermissionChecker",
    "Placement",
    "Principal",
    "Requirement",
    "ResponseReview",
    "Reviews",
    "RouteRule",
    "Secret",
    "ServiceConfig",
    "ServiceRoute",
    "ServiceTimeouts",
    "StoredCredential",
    "SystemClock",
    "TokenResolver",
    "User",
    "Workspace",
    "__version__",
    "current_principal",
    "generate_key",
    "hash_key",
    "looks_like_key",
    "parse_key",
]

_LAZY: dict[str, str] = {
    "Guard": "agentguard._guard",
    "Passage": "agentguard._guard",
    "Reviews": "agentguard._guard",
    "Placement": "agentguard._services",
    "ServiceConfig": "agentguard._services",
    "ServiceRoute": "agentguard._services",
    "ServiceTimeouts": "agentguard._services",
    "PermissionChecker": "agentguard._permissions",
    "Requirement": "agentguard._permissions",
    "ResponseReview": "agentguard._guard",
    "RouteRule": "agentguard._permissions",
    "Credentials": "agentguard._request",
    "GuardRequest": "agentguard._request",
    "Clock": "agentguard._clock",
    "SystemClock": "agentguard._clock",
    "Secret": "agentguard._secret",
    "current_principal": "agentguard._context",
    "KeyResolver": "agentguard._resolver",
    "TokenResolver": "agentguard._resolver",
    "Account": "agentguard._model",
    "AccountStatus": "agentguard._model",
    "CredentialOwner": "agentguard._model",
    "CredentialScope": "agentguard._model",
    "Grants": "agentguard._model",
    "IssuedKeys": "agentguard._model",
    "KeyKind": "agentguard._model",
    "KeyRecord": "agentguard._model",
    "Level": "agentguard._model",
    "Membership": "agentguard._model",
    "Principal": "agentguard._model",
    "StoredCredential": "agentguard._model",
    "User": "agentguard._model",
    "Workspace": "agentguard._model",
    "DEFAULT_ACCESS_TTL": "agentguard._keys",
    "DEFAULT_REFRESH_TTL": "agentguard._keys",
    "KeyIssuer": "agentguard._keys",
    "ParsedKey": "agentguard._keys",
    "generate_key": "agentguard._keys",
    "hash_key": "agentguard._keys",
    "looks_like_key": "agentguard._keys",
    "parse_key": "agentguard._keys",
}

#: Names this package exported before each public name got one home; the error says where.
_MOVED: dict[str, str] = {
    "AgentGuardMiddleware": "agentguard.asgi",
    "OAuthApp": "agentguard.asgi",
    "ProxyApp": "agentguard.asgi",
    "AgentGuardWSGIMiddleware": "agentguard.wsgi",
    "AgentAuth": "agentguard.client",
    "CredentialSwapper": "agentguard.credentials",
    "CredentialVault": "agentguard.credentials",
    "KeyRing": "agentguard.credentials",
    "DPoPKey": "agentguard.dpop",
    "DPoPPolicy": "agentguard.dpop",
    "MemoryStore": "agentguard.storage",
    "PostgresStore": "agentguard.storage",
    "SQLiteStore": "agentguard.storage",
    "AgentGuardError": "agentguard.errors",
    "AuditUnavailable": "agentguard.errors",
    "AuthenticationError": "agentguard.errors",
    "ConfigurationError": "agentguard.errors",
    "InsufficientScope": "agentguard.errors",
    "InvalidGrant": "agentguard.errors",
    "InvalidRequest": "agentguard.errors",
    "InvalidToken": "agentguard.errors",
    "IssuanceRefused": "agentguard.errors",
    "MalformedKey": "agentguard.errors",
    "MissingCredentials": "agentguard.errors",
    "Reason": "agentguard.errors",
    "RequestRefused": "agentguard.errors",
    "ServiceUnavailable": "agentguard.errors",
    "StoreUnavailable": "agentguard.errors",
    "UsageError": "agentguard.errors",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        home = _MOVED.get(name)
        if home is not None:
            raise AttributeError(
                f"agentguard.{name} has moved: use 'from {home} import {name}'", name=name
            )
        raise AttributeError(f"module 'agentguard' has no attribute {name!r}", name=name)
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
