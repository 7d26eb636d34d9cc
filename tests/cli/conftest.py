"""Running the CLI as operators do: in a temporary directory, with a clean environment.

``cli`` runs ``main()`` in-process (fast); ``subprocess_cli`` runs ``python -m agentguard.cli``
in a child, optionally with a ``sitecustomize`` that makes optional packages unimportable, the
way a machine without an extra installed behaves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.product.conftest import Result, RunCLI, cli

# Result, RunCLI and the ``cli`` fixture are the product tests' own, re-exported for the tests here.
__all__ = [
    "Result",
    "RunCLI",
    "RunProcess",
    "clean_env",
    "cli",
    "pg_url",
    "schema_exists",
    "subprocess_cli",
]

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


class RunProcess(Protocol):
    def __call__(
        self, *argv: str, blocked: tuple[str, ...] = (), stdin: str | None = None
    ) -> Result: ...


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AGENTGUARD_* variable from the outer environment; run from ``tmp_path/work``."""
    for name in list(os.environ):
        if name.startswith("AGENTGUARD_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    work.chmod(0o755)  # a normal directory, as a checkout is
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def subprocess_cli(clean_env: Path, tmp_path: Path) -> RunProcess:
    def run(*argv: str, blocked: tuple[str, ...] = (), stdin: str | None = None) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
        if blocked:
            site = tmp_path / f"site-{'-'.join(blocked)}"
            site.mkdir(exist_ok=True)
            lines = [f"sys.modules[{name!r}] = None" for name in blocked]
            (site / "sitecustomize.py").write_text("import sys\n" + "\n".join(lines) + "\n")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-m", "agentguard.cli", *argv],
            cwd=clean_env,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def _postgres_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL with a schema of its own (dropped afterwards)."""
    if not _postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    schema = f"cli_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES}?schema={schema}"
    import anyio

    async def drop() -> None:
        import asyncpg

        connection = await asyncpg.connect(POSTGRES)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()

    anyio.run(drop)


def schema_exists(url: str) -> bool:
    """Whether the ``?schema=`` of ``url`` exists in the database."""
    import anyio

    schema = url.rsplit("schema=", 1)[1]

    async def check() -> bool:
        import asyncpg

        connection = await asyncpg.connect(POSTGRES)
        try:
            found = await connection.fetchval(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema
            )
        finally:
            await connection.close()
        return bool(found)

    return bool(anyio.run(check))
