"""The fuzzing profile: every target in this directory runs with ``FUZZ``.

``AGENTGUARD_FUZZ_EXAMPLES`` sets the number of examples per target (default 200, so the normal
test run stays fast; CI's fuzz run sets 10000). No deadline (a slow example on a loaded machine is
not a finding) and a fresh random seed per run (``derandomize=False``); failures found are kept in
the example database and replayed first.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["EXAMPLES", "FUZZ"]


def _examples() -> int:
    text = os.environ.get("AGENTGUARD_FUZZ_EXAMPLES", "200")
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"AGENTGUARD_FUZZ_EXAMPLES must be an integer, not {text!r}") from None
    if value < 1:
        raise ValueError("AGENTGUARD_FUZZ_EXAMPLES must be at least 1")
    return value


EXAMPLES = _examples()

settings.register_profile(
    "agentguard-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Decorate each fuzz target with this (it does not change the global profile of other tests).
FUZZ = settings.get_profile("agentguard-fuzz")
