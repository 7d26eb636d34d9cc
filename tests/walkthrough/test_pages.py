"""Every walk-through runs as written: the command blocks of the operator's pages, in CI.

Each page's shell blocks run in order in one bash session (variables and background jobs carry
over, as in a reader's terminal), in a fresh directory holding a copy of ``examples/``, with
``set -euo pipefail``: a command that fails fails the test, naming the page and line. ``pip``
lines print what they would install (this environment has the package, installed the way
``.ci/run`` installs it); directives (see ``pages.py``) skip the blocks that run the test suite
itself or open an editor, check the output a page promises, and stop servers the page leaves
running. A page that drifts from the code fails here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.walkthrough.pages import Block, Page, read_page

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "docs/quickstart.md", "docs/how-to/gateway.md", "examples/gateway/README.md"]
PAGE_DEADLINE = 300.0
SERVE_DEADLINE = 30

PRELUDE = """\
set -euo pipefail
pip() { echo "walkthrough: agentguard is installed here; not running: pip $*"; }
"""


def _begin(index: int) -> str:
    return f"@@walkthrough-begin {index}@@"


def _lines(block: Block) -> list[str]:
    """The block's lines, less the skipped ones, with the ``instead`` replacements made."""
    kept = []
    for line in block.code.split("\n"):
        if any(text in line for text in block.skipped_lines):
            continue
        replaced = [lines for text, lines in block.instead.items() if text in line]
        kept.extend(replaced or [line])
    return kept


def _script(page: Page, blocks: list[Block]) -> str:
    parts = [PRELUDE]
    for index, block in enumerate(blocks):
        code = "\n".join(_lines(block))
        for old, new in page.replacements:
            code = code.replace(old, new)
        parts.append(f"echo '{_begin(index)}'")
        parts.extend(block.setup)
        if block.serve is None:
            parts.append(code)
            continue
        # A block that runs until stopped: start it in the background, as in a second
        # terminal, and wait until it answers; the page's end stops it.
        parts.append(
            textwrap.dedent(
                f"""\
                ( {code}
                ) &
                served=$!
                curl -sS -o /dev/null -w 'walkthrough: %{{http_code}} from {block.serve}\\n' \\
                    --retry {SERVE_DEADLINE} --retry-connrefused --retry-delay 1 {block.serve}
                kill -0 "$served"   # still serving: it did not exit on an error
                """
            )
        )
    parts.append(f"echo '{_begin(len(blocks))}'")
    return "\n".join(parts) + "\n"


def _stop_group(group: int, deadline: float = 15.0) -> None:
    """Stop the page's background jobs and wait until they are gone (their ports free)."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def _outputs(stdout: str, count: int) -> list[str]:
    """The output of each block, split at the markers the script prints."""
    pieces = re.split(r"@@walkthrough-begin (\d+)@@\n", stdout)
    found = {int(pieces[i]): pieces[i + 1] for i in range(1, len(pieces) - 1, 2)}
    return [found.get(index, "") for index in range(count)]


def _run_page(page: Page, workdir: Path, env: dict[str, str]) -> None:
    blocks = [block for block in page.blocks if block.skip is None]
    assert blocks, f"{page.path}: no block to run"
    shutil.copytree(ROOT / "examples", workdir / "examples")
    script = _script(page, blocks)
    log = workdir / "walkthrough.log"
    # Output goes to a file, not a pipe: the page's background jobs (a server started with
    # `&`) would hold a pipe open after the shell exits.
    with log.open("w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the page's background jobs die with the group
        )
        try:
            process.wait(timeout=PAGE_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(
                f"{page.path} did not finish in {PAGE_DEADLINE:g} s:\n"
                + log.read_text(encoding="utf-8")[-4000:]
            )
        finally:
            _stop_group(process.pid)
    stdout = log.read_text(encoding="utf-8")
    outputs = _outputs(stdout, len(blocks))
    if process.returncode != 0:
        ran = [i for i in range(len(blocks)) if _begin(i) in stdout]
        failed = blocks[ran[-1]] if ran else blocks[0]
        pytest.fail(
            f"{page.path}:{failed.line}: the block exited {process.returncode}:\n"
            f"{outputs[ran[-1] if ran else 0][-4000:]}"
        )
    for block, output in zip(blocks, outputs, strict=True):
        for pattern in block.expect:
            assert re.search(pattern, output, re.MULTILINE), (
                f"{page.path}:{block.line}: output does not match {pattern!r}:\n{output[-4000:]}"
            )


def _environment(workdir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENTGUARD_") and key not in {"EDITOR", "VISUAL"}
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(workdir)
    env["NO_COLOR"] = "1"
    return env


@pytest.mark.parametrize("name", PAGES)
def test_page_runs_on_sqlite(name: str, tmp_path: Path) -> None:
    page = read_page(ROOT / name)
    _run_page(page, tmp_path, _environment(tmp_path))


@pytest.mark.parametrize(
    "name", [name for name in PAGES if read_page(ROOT / name).postgresql] or ["(none)"]
)
def test_page_runs_on_postgresql(name: str, tmp_path: Path) -> None:
    if name == "(none)":
        pytest.fail("no page shows PostgreSQL: drop this test or mark the page")
    import anyio

    from tests.backends.services import drop_schema, postgres_dsn, random_name

    dsn = anyio.run(postgres_dsn)
    schema = random_name("walkthrough")
    env = _environment(tmp_path)
    env["AGENTGUARD_STORE"] = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    try:
        _run_page(read_page(ROOT / name), tmp_path, env)
    finally:
        anyio.run(drop_schema, dsn, schema)


def test_every_page_has_blocks_that_run() -> None:
    for name in PAGES:
        page = read_page(ROOT / name)
        assert [block for block in page.blocks if block.skip is None], name
