"""The MCP and live-stream how-tos run as written, like the pages of ``test_pages.py``.

``docs/how-to/mcp.md`` ("Try it on one machine"): users and DPoP-bound keys for one audience
from the CLI, ``examples/mcp_server.py`` served, the discovery documents, the MCP SDK client
with ``AgentAuth`` over ``httpx2`` (a reader sees and calls only the read tool, its ``add_note``
is a 403 naming the tool's scope, a live grant lets the same key call it), and a key for another
resource refused. ``docs/how-to/live-streams.md`` ("Try it"): a server-sent-event stream through
``agentguard serve`` ends with ``event: error`` once its key is revoked with the CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.walkthrough.pages import read_page
from tests.walkthrough.test_pages import ROOT, _environment, _run_page

PAGES = ["docs/how-to/mcp.md", "docs/how-to/live-streams.md"]


@pytest.mark.parametrize("name", PAGES)
def test_page_runs(name: str, tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    _run_page(read_page(ROOT / name), tmp_path, _environment(tmp_path))
