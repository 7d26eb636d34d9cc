"""Telemetry on the gateway (``[telemetry]``): built by the telemetry work."""

from __future__ import annotations

from agentguard.asgi._operator import OperatorEndpoints
from agentguard.config import Settings

__all__ = ["metrics_endpoints"]


def metrics_endpoints(settings: Settings) -> OperatorEndpoints | None:
    """The ``/metrics`` endpoint, or ``None`` when metrics are off (placeholder until built)."""
    return None
