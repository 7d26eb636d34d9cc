"""What the operator commands share: finding the settings and store, auditing, exit codes.

Exit codes: 0 success; 1 refused (an unknown user, workspace or account, a rule of the store);
2 usage or environment (malformed settings, an unreadable store, a missing key-encryption key).
Every failure is one line on stderr: ``agentguard <command>: <why>``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import ValidationError

from agentguard._clock import SystemClock
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.audit._writer import AuditWriter
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.cli._target import Access, open_target, settings_for, store_url
from agentguard.config import Settings
from agentguard.errors import ConfigurationError, IssuanceRefused
from agentguard.storage._protocols import IntegrityError, StorageError

__all__ = [
    "Access",
    "Operator",
    "one_line",
    "open_operator",
    "run_command",
    "settings_for",
    "store_url",
]


@dataclass
class Operator:
    """An open store, the settings it came from, and an audit writer for lifecycle events."""

    store: Any
    settings: Settings | None
    audit: AuditWriter
    audit_clock: SystemClock = field(default_factory=SystemClock)

    async def record(self, action: Action, **fields: Any) -> None:
        """Append a lifecycle event, attributed to the operator running the command."""
        detail = dict(fields.pop("detail", {}))
        detail.setdefault("via", "cli")
        try:
            detail.setdefault("operator", getpass.getuser())
        except (KeyError, OSError):  # no login name in some containers
            detail.setdefault("operator", "unknown")
        event = AuditEvent(
            action=action,
            ts=self.audit_clock.now(),
            decision=Decision.ALLOW,
            detail=detail,
            **fields,
        )
        await self.audit.record(event)


@asynccontextmanager
async def open_operator(
    args: argparse.Namespace, access: Access = Access.EXISTING
) -> AsyncIterator[Operator]:
    """Open the store the arguments name in ``access`` mode; close it afterwards."""
    settings = settings_for(args)
    instance = settings.audit.instance if settings is not None else None
    async with open_target(args, access, settings) as (store, _):
        yield Operator(store, settings, AuditWriter(store, instance=instance or "cli"))


def run_command(
    name: str,
    handlers: Mapping[str, Callable[[Operator, argparse.Namespace], Awaitable[int]]],
    args: argparse.Namespace,
    subcommand: str,
    access: Mapping[str, Access] | None = None,
) -> int:
    """Run ``handlers[subcommand]`` on an open operator; map failures to exit codes.

    ``access`` says how each subcommand opens the store (default :attr:`Access.EXISTING`: an
    existing store, never a new one).
    """
    handler = handlers[subcommand]
    mode = (access or {}).get(subcommand, Access.EXISTING)

    async def go() -> int:
        async with open_operator(args, mode) as operator:
            return await handler(operator, args)

    try:
        return anyio.run(go)
    except (CommandRefused, IssuanceRefused, IntegrityError) as error:
        print(f"agentguard {name}: {one_line(error)}", file=sys.stderr)
        return 1
    except (CommandError, ConfigurationError, StorageError, OSError, ValueError) as error:
        print(f"agentguard {name}: {one_line(error)}", file=sys.stderr)
        return 2


def one_line(error: Exception) -> str:
    """A one-line description of ``error`` for stderr."""
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
