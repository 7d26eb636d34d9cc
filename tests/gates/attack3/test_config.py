"""Settings for budgets and rate limits that ``serve --check`` must refuse in one line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gates.attack3.support import cli, init


@pytest.mark.parametrize(
    "entry",
    [
        '[[budgets]]\nname = "crm-daily"\nservice = "crn"\nlimit = 5\nwindow = 86400\n',
        '[[rate_limits]]\nname = "crm-rate"\nservice = "crn"\nrate = 1\n',
    ],
    ids=["budget", "rate_limit"],
)
def test_a_limit_on_an_unknown_service_is_refused(tmp_path: Path, entry: str) -> None:
    """A typo in ``service`` makes the limit apply to nothing: the spending cap the operator
    wrote is silently not enforced, while ``serve --check`` says ``settings OK``."""
    init(tmp_path, entry)
    done = cli(tmp_path, "serve", "--check")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "crn" in done.stderr


@pytest.mark.parametrize(
    "entry",
    [
        '[[budgets]]\nname = "b"\nlimit = 5\nwindow = 100000000000000\n',
        '[[rate_limits]]\nname = "r"\nrate = 5\nperiod = 1e300\n',
        '[[rate_limits]]\nname = "r"\nrate = inf\n',
    ],
    ids=["huge-window", "huge-period", "infinite-rate"],
)
def test_out_of_range_limit_settings_are_a_one_line_error(tmp_path: Path, entry: str) -> None:
    """Today each is an OverflowError traceback from ``serve --check`` (exit 1)."""
    init(tmp_path, entry)
    done = cli(tmp_path, "serve", "--check")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
