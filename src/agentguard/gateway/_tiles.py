"""The audit log's tiles on the operator listener (``[audit] tiles``): built by the tiles work."""

from __future__ import annotations

from typing import Any

from agentguard.asgi._operator import OperatorEndpoints
from agentguard.config import Settings

__all__ = ["tile_endpoints"]


def tile_endpoints(settings: Settings, store: Any, checkpointer: Any) -> OperatorEndpoints | None:
    """The ``/log/`` endpoints, or ``None`` when tiles are off (placeholder until built)."""
    return None
