from __future__ import annotations

import io
import subprocess
import sys

import pytest

from agentguard.cli import main
from agentguard.cli._demo import run


def test_demo_tells_the_whole_story() -> None:
    out = io.StringIO()
    assert run(out=out) == 0
    text = out.getvalue()
    for expected in (
        "-> ALLOWED 200",
        "-> DENIED  403  insufficient_scope",
        "-> DENIED  400  refresh_reused",
        "-> DENIED  401  revoked",
        "-> DENIED  401  user_disabled",
        "chain intact; no key appears in it",
        "verify: OK, anchored at size",
        "MODIFIED",
        "real key arrived: yes; placeholder present upstream: NO",
        "projects received: Bearer minted-alice-1 (a token minted for alice alone), twice",
        "token exchanges: 1 (cached until 80% of its life); admin key sent upstream: no",
    ):
        assert expected in text
    # the approval scene: held, approved by an operator, run once, refused the second time
    scene = text.split("needs a human's approval", 1)[1].split("\n\n", 1)[0]
    assert scene.count("-> DENIED  403  approval_required") == 1
    assert "the CRM was not called: 0 deletes so far" in scene
    assert "operator maria approves it on the operator listener (token ag_op_…): approved" in scene
    assert scene.index("-> ALLOWED 200") < scene.index("-> DENIED  403  approval_used")
    assert "the CRM deleted the contact once: an approval allows one call" in scene
    for action in ("approval.request", "approval.decide", "approval.consume"):
        assert text.count(action) == 1, action
    assert "\033[" not in text


def test_demo_runs_as_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "chain intact" in result.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "agentguard" in capsys.readouterr().out
