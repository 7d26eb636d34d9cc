"""Random programs for the gate contracts: hypothesis draws the steps, a worker thread runs them.

The contracts' tests are async, hypothesis's ``@given`` is not: the test hands the property to
a worker thread (``anyio.to_thread``), where hypothesis draws each program and runs it back on
the test's event loop (``anyio.from_thread``), so the store is only ever used from its own loop.
Programs are derandomized (the same on every run) unless ``AGENTGUARD_STATEFUL_RANDOM=1``; each
example works in fresh names, so the backend need not be emptied between examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio.from_thread
import anyio.to_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

__all__ = ["run_programs"]

T = TypeVar("T")


async def run_programs(
    programs: st.SearchStrategy[T],
    check: Callable[[T], Coroutine[Any, Any, None]],
    *,
    examples: int,
) -> None:
    """Run ``check`` on ``examples`` programs drawn from ``programs``; raise on the first failure
    (hypothesis shrinks it first)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=os.environ.get("AGENTGUARD_STATEFUL_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(programs)
    def run(program: T) -> None:
        anyio.from_thread.run(check, program)

    await anyio.to_thread.run_sync(run)
