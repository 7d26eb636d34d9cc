"""The walk-through runner can fail: a failing command, a missing output, a bad directive."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.walkthrough.pages import read_page
from tests.walkthrough.test_pages import _environment, _run_page


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return path


def _run(tmp_path: Path, text: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _run_page(read_page(_page(tmp_path, text)), work, _environment(work))


def test_a_page_that_works_passes(tmp_path: Path) -> None:
    _run(
        tmp_path,
        '<!-- walkthrough: replace "world" "there" -->\n'
        '<!-- walkthrough: skip-line "exit 7" shows a failure -->\n'
        '```bash\nGREETING=hello\nexit 7\necho "$GREETING world"\n```\n'
        "<!-- walkthrough: expect ^hello there$ -->\n",
    )


def test_a_failing_command_fails_naming_the_block(tmp_path: Path) -> None:
    text = "# title\n\n```bash\necho one\n```\n\n```sh\n(exit 3)\necho never\n```\n"
    with pytest.raises(pytest.fail.Exception, match=r"page\.md:7: the block exited 3"):
        _run(tmp_path, text)


def test_a_missing_output_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="does not match '\\^bye'"):
        _run(tmp_path, "```bash\necho hi\n```\n<!-- walkthrough: expect ^bye -->\n")


def test_variables_carry_over_and_instead_replaces_a_line(tmp_path: Path) -> None:
    _run(
        tmp_path,
        "```bash\nNAME=alice\n```\n"
        '<!-- walkthrough: instead "$EDITOR notes"\necho edited > notes\n-->\n'
        '```bash\n$EDITOR notes\ncat notes; echo "$NAME"\n```\n'
        "<!-- walkthrough: expect ^edited\\nalice$ -->\n",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- walkthrough: frobnicate -->\n```bash\ntrue\n```\n", "unknown walkthrough"),
        ("<!-- walkthrough: skip -->\n```bash\ntrue\n```\n", "needs a reason"),
        ("<!-- walkthrough: expect x -->\n", "before any block"),
        ("```bash\ntrue\n```\n<!-- walkthrough: setup\ntrue\n-->\n", "names no block"),
        ("<!-- walkthrough: setup\ntrue\n-->\n```python\npass\n```\n", "non-shell block"),
    ],
)
def test_malformed_directives_are_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_page(_page(tmp_path, text))
