"""ASGI adapters: the guard middleware and the OAuth endpoints."""

from agentguard.asgi.middleware import AgentGuardMiddleware
from agentguard.asgi.oauth import OAuthApp
from agentguard.asgi.scope import principal_from_scope

__all__ = ["AgentGuardMiddleware", "OAuthApp", "principal_from_scope"]
