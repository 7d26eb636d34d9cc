"""The two ways a command stops early: one line on stderr and an exit code scripts rely on."""

from __future__ import annotations

from typing import ClassVar

from agentguard.errors import AgentGuardError

__all__ = ["CommandError", "CommandRefused"]


class CommandError(AgentGuardError):
    """The command was called wrongly or the environment is not ready (exit code 2)."""

    exit_code: ClassVar[int] = 2


class CommandRefused(AgentGuardError):
    """The command cannot do what was asked: an unknown id, a disabled user (exit code 1)."""

    exit_code: ClassVar[int] = 1
