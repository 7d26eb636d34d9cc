"""Instruction counts of one benchmark's timed loop, with callgrind (repeatable under any load).

The benchmark re-runs itself as a child under valgrind with ``--child NAME`` and its own count
option; the child sets up, warms up and then runs only the counted loop inside
:func:`counted_call` (``operator.call``), on whose C function callgrind toggles collection, so
imports and set-up are not counted.
"""

from __future__ import annotations

import operator
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

__all__ = ["counted_call", "instructions"]


def counted_call() -> Callable[..., Any]:
    """``operator.call`` (Python 3.11+): callgrind toggles collection on its C function."""
    call = operator.__dict__.get("call")
    if call is None:
        raise SystemExit("--callgrind needs Python 3.11 or newer (operator.call)")
    return cast("Callable[..., Any]", call)


def instructions(script: str, child: str, count_option: str, count: int) -> int:
    """Instructions the child ``script --child CHILD COUNT_OPTION COUNT`` runs in its loop."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--callgrind needs valgrind on PATH")
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run(  # noqa: S603 - our own script under valgrind
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={Path(directory) / 'callgrind.out'}",
                "--collect-atstart=no",
                "--toggle-collect=_operator_call",
                sys.executable,
                script,
                "--child",
                child,
                count_option,
                str(count),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": "0"},
        )
    found = re.search(r"Collected : ([\d,]+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))
