"""Rows every benchmark records: a figure, its unit, and the baseline measured in the same run.

A script calls :func:`record` with its rows; when ``AGENTGUARD_BENCH_JSON`` names a file (the
runner in ``run_all.py`` sets it), the rows are appended there as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["Row", "record"]


@dataclass(frozen=True)
class Row:
    """One measured figure next to its same-run baseline.

    ``lower_is_better`` is true for times (µs, ms) and false for rates (events/s, req/s).
    """

    suite: str
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    lower_is_better: bool

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


def record(rows: Sequence[Row]) -> None:
    """Append ``rows`` to ``$AGENTGUARD_BENCH_JSON`` when it is set."""
    target = os.environ.get("AGENTGUARD_BENCH_JSON")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({**asdict(row), "ratio": row.ratio}) + "\n")
