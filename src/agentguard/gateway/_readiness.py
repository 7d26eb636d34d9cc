"""Readiness: one cheap probe per store the gateway uses, all run together under one deadline.

``/readyz`` is ready only when every check passes. A check is a name and an async callable that
raises when its component cannot serve; the store checks are built by :func:`store_checks`, and
other components (the audit checkpointer, say) add their own to ``Gateway.health_checks``. A
failed check is reported by its name and the exception's type only: never a message, a URL or
a DSN, which can hold a password.

Witnesses are reported, never checked: a witness that is down delays cosignatures, not
requests, so ``/readyz`` stays 200 and its body says how old the newest witnessed checkpoint
is (``audit_witnessed_age``: seconds by the gateway's clock, ``null`` when none reached the
quorum yet) and how many witnesses failed their last submission
(``audit_witnesses_failing``, a count). ``/readyz`` is on the agents' listener, without
authentication, so it names no witness, URL or log size: which third parties vouch for the
log, and how many events it holds, are the operator's to know (the gateway's log names each
failing witness). Alert on that age, not on readiness.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from agentguard._clock import Clock
from agentguard._model import CredentialOwner
from agentguard.audit._cosignatures import check_distinct
from agentguard.audit._witness import WitnessClient
from agentguard.errors import ConfigurationError, UsageError

if TYPE_CHECKING:
    from agentguard._config_observe import WitnessSettings
    from agentguard.audit._witnessing import Witnesses

__all__ = ["HealthCheck", "run_checks", "store_checks", "witness_clients", "witness_details"]

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


def witness_clients(settings: Sequence[WitnessSettings]) -> list[WitnessClient]:
    """One tlog-witness client per ``[[audit.witnesses]]`` entry (URL and vkey checked).

    Raises :class:`ConfigurationError` for two entries with one key name or one public key:
    one witness configured twice would count twice towards the quorum.
    """
    clients = [WitnessClient(w.url, w.vkey, timeout=w.timeout) for w in settings]
    try:
        check_distinct([client.key for client in clients])
    except UsageError as error:
        raise ConfigurationError(f"[[audit.witnesses]]: {error}") from None
    return clients


def witness_details(witnesses: Witnesses) -> Callable[[], dict[str, object]]:
    """The ``/readyz`` fields on witnessing: informational, they never make it fail."""

    def details() -> dict[str, object]:
        age = witnesses.age()
        return {
            "audit_witnessed_age": None if age is None else round(age, 3),
            "audit_witnesses_failing": len(witnesses.failing()),
        }

    return details
