"""WSGI adapter: the guard around a Flask or Django app, deciding on one background loop."""

from __future__ import annotations

from agentguard.wsgi._middleware import (
    PRINCIPAL_ENVIRON_KEY,
    AgentGuardWSGIMiddleware,
    principal_from_environ,
    request_from_environ,
)
from agentguard.wsgi._portal import EventLoopPortal, default_portal

__all__ = [
    "PRINCIPAL_ENVIRON_KEY",
    "AgentGuardWSGIMiddleware",
    "EventLoopPortal",
    "default_portal",
    "principal_from_environ",
    "request_from_environ",
]
