"""Readiness: one cheap probe per store the gateway uses, all run together under one deadline.

``/readyz`` is ready only when every check passes. A check is a name and an async callable that
raises when its component cannot serve; the store checks are built by :func:`store_checks`, and
other components (the audit checkpointer, say) add their own to ``Gateway.health_checks``. A
failed check is reported by its name and the exception's type only: never a message, a URL or
a DSN, which can hold a password.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, NamedTuple

import anyio

from agentguard._clock import Clock
from agentguard._model import CredentialOwner

__all__ = ["HealthCheck", "run_checks", "store_checks"]

logger = logging.getLogger("agentguard.gateway")

_UNKNOWN_KEY_HASH = bytes(32)  # no key hashes to all zeros; the lookup reads and finds nothing


class HealthCheck(NamedTuple):
    """``check()`` raises when the component called ``name`` cannot serve requests."""

    name: str
    check: Callable[[], Awaitable[object]]


def store_checks(
    *,
    keys: Any,
    audit: Any,
    replay: Any | None,
    credentials: Any | None,
    clock: Clock,
) -> list[HealthCheck]:
    """A probe for each store role: the key store's lookup, the audit head, a credential read,
    and the replay cache's ``ping`` (or a claim of a random id that expires in a second).

    One object may serve several roles; each role is probed, because each reads its own table.
    """
    checks = [
        HealthCheck("key store", lambda: keys.lookup(_UNKNOWN_KEY_HASH)),
        HealthCheck("audit store", audit.head),
    ]
    if credentials is not None:
        checks.append(
            HealthCheck(
                "credential store",
                lambda: credentials.get_credential("readyz", CredentialOwner.USER, "readyz"),
            )
        )
    if replay is not None:
        ping = getattr(replay, "ping", None)

        async def claim() -> object:
            return await replay.check_and_store(os.urandom(32), clock.now() + timedelta(seconds=1))

        checks.append(HealthCheck("replay cache", ping if callable(ping) else claim))
    return checks


async def run_checks(checks: Sequence[HealthCheck], limit: float) -> dict[str, str]:
    """Run every check at once, each within ``limit`` seconds; ``{name: error type}`` of those
    that failed (empty when all passed)."""
    failed: dict[str, str] = {}

    async def run(item: HealthCheck) -> None:
        try:
            with anyio.fail_after(limit):
                await item.check()
        except Exception as error:  # any failure means "not ready"; only its type is kept
            failed[item.name] = type(error).__name__
            logger.warning("readiness check failed: %s: %s", item.name, type(error).__name__)

    async with anyio.create_task_group() as tasks:
        for item in checks:
            tasks.start_soon(run, item)
    return {item.name: failed[item.name] for item in checks if item.name in failed}
