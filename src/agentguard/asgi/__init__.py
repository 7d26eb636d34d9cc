"""ASGI adapters: the guard middleware, the OAuth endpoints and the credential-swapping proxy."""

from agentguard.asgi.middleware import AgentGuardMiddleware
from agentguard.asgi.oauth import OAuthApp
from agentguard.asgi.proxy import ProxyApp
from agentguard.asgi.scope import AgentUser, principal_from_scope

__all__ = ["AgentGuardMiddleware", "AgentUser", "OAuthApp", "ProxyApp", "principal_from_scope"]
