"""Helpers for the third attack on issue 20: the CLI in a subprocess, a fresh settings file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's ``src`` first, no AGENTGUARD_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(work: Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``agentguard ARGV`` in ``work``; the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "agentguard.cli", *argv],
        cwd=work, env=_env(), input=stdin, capture_output=True, timeout=60, check=False, text=True,
    )  # fmt: skip


def init(work: Path, extra: str = "") -> Path:
    """``agentguard init`` (SQLite, one https service ``crm``) plus ``extra`` TOML appended."""
    done = cli(work, "init", "--service", "crm=https://crm.example.com",
               "--public-origin", "http://127.0.0.1:18999")  # fmt: skip
    assert done.returncode == 0, done.stderr
    settings = work / "agentguard.toml"
    settings.write_text(settings.read_text() + "\n" + extra)
    return settings
