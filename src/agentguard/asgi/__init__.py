"""ASGI adapters: the guard middleware, the OAuth endpoints, the credential-swapping proxy, the
operator listener's app and the connect pages where people connect their vendor accounts."""

from agentguard.asgi._connect import ConnectApp
from agentguard.asgi._lifespan import guard_lifespan
from agentguard.asgi._metadata import (
    AuthorizationServerMetadata,
    ProtectedResourceMetadata,
    advertise_metadata,
)
from agentguard.asgi._middleware import AgentGuardMiddleware
from agentguard.asgi._oauth import OAuthApp
from agentguard.asgi._operator import OperatorApp
from agentguard.asgi._proxy import ProxyApp
from agentguard.asgi._scope import AgentAuthCredentials, AgentUser, principal_from_scope

__all__ = [
    "AgentAuthCredentials",
    "AgentGuardMiddleware",
    "AgentUser",
    "AuthorizationServerMetadata",
    "ConnectApp",
    "OAuthApp",
    "OperatorApp",
    "ProtectedResourceMetadata",
    "ProxyApp",
    "advertise_metadata",
    "guard_lifespan",
    "principal_from_scope",
]
