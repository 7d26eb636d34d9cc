"""Review work in bounded steps: a checkpoint between steps yields and enforces the deadline.

A reviewer is a coroutine, so a timeout can only take effect where it awaits. Built-in
reviewers do their work in steps, each one linear-time pass over the body (parse it, fold it,
one RE2 search), and ``await checkpoint()`` between steps. A checkpoint gives the event loop to
other requests, then raises :class:`ReviewDeadlineExceeded` once the step's deadline (set by
:class:`~agentguard.review.ReviewStep` from its ``timeout`` and ``clock``) has passed. The chain
turns that into a ``reviewer_timeout`` block (fail closed), audited like any other finding.

Write your own reviewer the same way: call :func:`checkpoint` between units of CPU work.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio.lowlevel

from agentguard.errors import AgentGuardError

__all__ = ["STEP_CHARS", "Deadline", "ReviewDeadlineExceeded", "checkpoint", "deadline"]

STEP_CHARS = 64 * 1024
"""Characters of per-field or per-line work between two checkpoints."""


class ReviewDeadlineExceeded(AgentGuardError, TimeoutError):
    """The reviewer ran past its step's timeout; the chain blocks (``reviewer_timeout``)."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the current reviewer must be done, on ``clock`` (seconds)."""

    at: float
    clock: Callable[[], float]

    def passed(self) -> bool:
        """Whether the deadline is behind us."""
        return self.clock() >= self.at


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "agentguard_review_deadline", default=None
)


@contextmanager
def deadline(at: float, clock: Callable[[], float]) -> Iterator[Deadline]:
    """Set the deadline :func:`checkpoint` enforces for the code inside the block."""
    current = Deadline(at, clock)
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


async def checkpoint() -> None:
    """Let other tasks run, then raise :class:`ReviewDeadlineExceeded` if time is up."""
    await anyio.lowlevel.checkpoint()
    current = _CURRENT.get()
    if current is not None and current.passed():
        raise ReviewDeadlineExceeded("the reviewer ran past its timeout")
