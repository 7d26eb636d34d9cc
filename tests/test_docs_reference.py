"""The documentation keeps up with the code: the API table and the index page.

``mkdocs build --strict`` (``nox -s docs``) checks links and docstrings; these tests check what a
build cannot: that every public name is in the table of docs/reference/api.md, and that every
page of the site is reachable from docs/index.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import agentguard
from tests.support.surface import api_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_PAGE = DOCS / "reference" / "api.md"

#: A Markdown link target: ``(path.md)`` or ``(path.md#anchor)``.
_LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)\s]*)?\)")


def _api_table_names() -> set[str]:
    """Every backticked name in the table rows of api.md, call parentheses dropped."""
    rows = [line for line in API_PAGE.read_text().splitlines() if line.startswith("|")]
    spans = re.findall(r"`([^`]+)`", "\n".join(rows))
    return {span.removesuffix("()") for span in spans}


def test_the_api_page_is_generated_from_the_code() -> None:
    assert API_PAGE.read_text(encoding="utf-8") == api_markdown(), (
        "docs/reference/api.md is out of date: run `python -m tests.support.surface --write-api`"
    )


@pytest.mark.parametrize("name", sorted(agentguard.__all__))
def test_every_public_name_is_in_the_api_table(name: str) -> None:
    assert name in _api_table_names(), f"{name} is in agentguard.__all__ but not in {API_PAGE}"


def test_the_api_table_names_no_removed_name() -> None:
    """Names in the first table (the ``agentguard`` package) are all still exported."""
    text = API_PAGE.read_text()
    first_table = text.split("## `agentguard`", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in first_table.splitlines() if line.startswith("| `")]
    named_cells = [row.split("|")[1] for row in rows]
    listed = {
        span.removesuffix("()") for cell in named_cells for span in re.findall(r"`([^`]+)`", cell)
    }
    assert listed, "the agentguard table has no rows"
    assert listed <= set(agentguard.__all__), sorted(listed - set(agentguard.__all__))


def _pages() -> list[str]:
    return sorted(
        page.relative_to(DOCS).as_posix()
        for page in DOCS.rglob("*.md")
        if page.name != "index.md" or page.parent != DOCS
    )


def test_the_docs_have_pages() -> None:
    assert len(_pages()) > 20


@pytest.mark.parametrize("page", _pages())
def test_every_page_is_linked_from_the_index(page: str) -> None:
    linked = set(_LINK.findall((DOCS / "index.md").read_text()))
    assert page in linked, f"docs/index.md does not link {page}"
