"""Turning a storage outage into a fail-closed refusal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from agentguard.errors import AgentGuardError, StoreUnavailable

__all__ = ["store_outage"]

logger = logging.getLogger("agentguard.storage")


@contextmanager
def store_outage() -> Iterator[None]:
    """Re-raise anything but an :class:`AgentGuardError` as :class:`StoreUnavailable` (503).

    Only the exception's type is logged: driver messages can quote query parameters.
    """
    try:
        yield
    except AgentGuardError:
        raise
    except Exception as exc:
        logger.error("storage call failed: %s", type(exc).__name__)
        raise StoreUnavailable() from exc
