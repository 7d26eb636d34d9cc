"""Independent transparency-log tools for differential tests: ``aics-tlog`` and ``aics-witness``.

Both are pure-Python C2SP implementations that this project did not write (Apache-2.0, on the
package index). They need Python 3.12 or newer, which the test environment (3.11) is not, so
they live in a venv of their own, built once per machine from the package index and run as
separate processes: nothing of theirs is imported into our tests, and nothing of ours into them.

``AGENTGUARD_AICS_PYTHON`` names the interpreter (default: the first ``python3.12`` /
``python3.13`` found, pyenv's versions included); ``AGENTGUARD_AICS_VENV`` the venv directory.
Without an interpreter the tests skip, which ``AGENTGUARD_REQUIRE_SERVICES=1`` (CI) turns into a
failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["AICS_TLOG", "AICS_WITNESS", "aics_python", "run_tlog", "tlog_script"]

AICS_TLOG = "aics-tlog==0.2.1"
AICS_WITNESS = "aics-witness==0.1.0"
_PYENV = Path(os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))) / "versions"


def _unavailable(reason: str) -> Any:
    message = f"the independent tlog tools are unavailable: {reason}"
    if os.environ.get("AGENTGUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (AGENTGUARD_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(message)


def _interpreter() -> str | None:
    named = os.environ.get("AGENTGUARD_AICS_PYTHON")
    if named:
        return named
    for version in ("3.12", "3.13"):
        found = shutil.which(f"python{version}")
        if (
            found
            and subprocess.run([found, "-V"], check=False, capture_output=True).returncode == 0
        ):
            return found
        if _PYENV.is_dir():
            for candidate in sorted(_PYENV.glob(f"{version}*/bin/python{version}")):
                return str(candidate)
    return None


def aics_python() -> str:
    """The venv interpreter that has ``aics_tlog`` and ``aics_witness`` (built on first use)."""
    base = _interpreter()
    if base is None:
        return str(_unavailable("no Python 3.12+ interpreter (set AGENTGUARD_AICS_PYTHON)"))
    default = Path(tempfile.gettempdir()) / "agentguard-aics-venv-0.2.1-0.1.0"
    venv = Path(os.environ.get("AGENTGUARD_AICS_VENV", str(default)))
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            steps = [
                [base, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "-q", AICS_TLOG, AICS_WITNESS],
            ]
            for step in steps:
                done = subprocess.run(
                    step, check=False, capture_output=True, text=True, timeout=600
                )
                if done.returncode != 0:
                    return str(_unavailable(f"{' '.join(step[:4])}: {done.stderr[-400:]}"))
            ready.write_text("ok\n")
    return str(python)


def run_tlog(args: Sequence[str], *, timeout: float = 120) -> dict[str, Any]:
    """``aics-tlog ARGS`` (its CLI prints one JSON object); the parsed result, ``ok`` included."""
    done = subprocess.run(
        [aics_python(), "-m", "aics_tlog", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(
            f"aics-tlog printed no JSON (exit {done.returncode}): {done.stdout!r} {done.stderr!r}"
        ) from None
    return result


def tlog_script(source: str, *, stdin: str = "", timeout: float = 120) -> str:
    """Run ``source`` in the aics venv (it may import ``aics_tlog``); its stdout. Fails loudly."""
    done = subprocess.run(
        [aics_python(), "-c", source],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"aics script failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


if __name__ == "__main__":  # python -m tests.support.aics: build the venv, print its python
    print(aics_python())
    sys.exit(0)
