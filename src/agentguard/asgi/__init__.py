"""ASGI adapters: the guard middleware, the OAuth endpoints and the credential-swapping proxy."""

from agentguard.asgi._lifespan import guard_lifespan
from agentguard.asgi._metadata import ProtectedResourceMetadata, advertise_metadata
from agentguard.asgi._middleware import AgentGuardMiddleware
from agentguard.asgi._oauth import OAuthApp
from agentguard.asgi._proxy import ProxyApp
from agentguard.asgi._scope import AgentAuthCredentials, AgentUser, principal_from_scope

__all__ = [
    "AgentAuthCredentials",
    "AgentGuardMiddleware",
    "AgentUser",
    "OAuthApp",
    "ProtectedResourceMetadata",
    "ProxyApp",
    "advertise_metadata",
    "guard_lifespan",
    "principal_from_scope",
]
