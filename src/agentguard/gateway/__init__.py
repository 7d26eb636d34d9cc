"""The standalone gateway ``agentguard serve`` runs: OAuth endpoints, one proxy per service.

Build it from settings and serve ``gateway.app`` with any ASGI server::

    from agentguard.config import load_settings
    from agentguard.gateway import build_gateway

    gateway = build_gateway(load_settings("agentguard.toml"))
    app = gateway.app
"""

from agentguard.gateway._app import Gateway, build_gateway
from agentguard.gateway._logging import (
    JSONFormatter,
    RequestIdMiddleware,
    configure_logging,
    current_request_id,
)

__all__ = [
    "Gateway",
    "JSONFormatter",
    "RequestIdMiddleware",
    "build_gateway",
    "configure_logging",
    "current_request_id",
]
