"""Shared pieces of the product tests: a key-encryption key, running the CLI in-process."""

from __future__ import annotations

import base64
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from agentguard.cli import main


def new_kek(key_id: str = "kek-1") -> str:
    return f"{key_id}:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def one_line_error(self, code: int) -> str:
        """Assert a one-line error with ``code`` and no traceback; return the line."""
        assert self.code == code, (self.code, self.out, self.err)
        assert self.err.count("\n") == 1 and self.err.startswith("agentguard"), self.err
        assert "Traceback" not in self.err
        return self.err.strip()


class RunCLI(Protocol):
    def __call__(self, *argv: str, stdin: str | None = None) -> Result: ...


@pytest.fixture
def kek(monkeypatch: pytest.MonkeyPatch) -> str:
    value = new_kek()
    monkeypatch.setenv("AGENTGUARD_KEK", value)
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AGENTGUARD_* variable from the outer environment; run from ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith("AGENTGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> RunCLI:
    def run(*argv: str, stdin: str | None = None) -> Result:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
