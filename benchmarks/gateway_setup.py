"""The processes of ``bench_gateway.py``: a provisioned ``agentguard serve`` and its neighbours.

:class:`Deployment` writes a settings file (SQLite store, one service pointing at the fixed
upstream), provisions ``agents`` users through the operator CLI (each with the vendor key and a
Bearer key, and a DPoP-bound key when asked), and starts ``agentguard serve`` as operators run
it. :class:`Processes` stops everything it started, by pid, when the run ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx

from agentguard.cli import main as cli_main
from agentguard.client._credentials_file import parse_credentials

__all__ = ["Deployment", "Processes", "free_port", "wait_http"]

SERVICE = "crm"
WORKSPACE = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, seconds: float) -> None:
    """Poll ``url`` until it answers 200, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=1, trust_env=False)
            if answer.status_code == 200:
                return
            last = answer.status_code
        except httpx.TransportError as error:
            last = error
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer 200 within {seconds} s (last: {last!r})")


class Processes:
    """Starts subprocesses and terminates each of them (by pid) on exit."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def start(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as sink:
            process = subprocess.Popen(  # noqa: S603 - our own commands
                argv, stdout=sink, stderr=subprocess.STDOUT, env=env
            )
        self.started.append(process)
        return process

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def pg_schema(database: str) -> Iterator[str]:
    """A fresh schema in the PostgreSQL ``database`` (a URL), as a store URL; dropped on exit."""
    import asyncpg

    name = f"bench_gateway_{os.getpid()}_{secrets.token_hex(4)}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(database)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f"CREATE SCHEMA {name}"))
    try:
        separator = "&" if "?" in database else "?"
        yield f"{database}{separator}schema={name}"
    finally:
        asyncio.run(run(f"DROP SCHEMA {name} CASCADE"))


class Deployment:
    """``agentguard serve`` with ``agents`` provisioned users, in ``root``; on SQLite in ``root``
    unless ``store`` names another store URL (a PostgreSQL schema, say)."""

    def __init__(
        self, root: Path, upstream: str, *, agents: int, dpop: bool, store: str | None = None
    ) -> None:
        self.root = root
        self.upstream = upstream
        self.agents = agents
        self.dpop = dpop
        self.port = free_port()
        self.store = store or f"sqlite:///{root / 'agentguard.db'}"
        self.kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.bearer_keys: list[str] = []
        self.dpop_files: list[Path] = []

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _cli(self, *argv: str, stdin: str | None = None) -> None:
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main([*argv, "--config", str(self.root / "agentguard.toml")])
        finally:
            sys.stdin = saved
        if code != 0:
            raise SystemExit(f"agentguard {' '.join(argv[:2])}: {code}: {err.getvalue()}")

    def provision(self) -> None:
        """Settings, an account, ``agents`` users with the vendor key, and their keys."""
        self.root.mkdir()
        (self.root / "agentguard.toml").write_text(
            f'public_origin = "{self.origin}"\n'
            f'[store]\nurl = "{self.store}"\n'
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n'
            f'[[services]]\nname = "{SERVICE}"\nbase_url = "{self.upstream}/v2"\n'
            "allow_insecure_http = true\n"
        )
        saved = os.environ.get("AGENTGUARD_KEK")
        os.environ["AGENTGUARD_KEK"] = self.kek
        try:
            self._cli("accounts", "add", "acme")
            self._cli("workspaces", "add", WORKSPACE, "--account", "acme")
            for n in range(self.agents):
                user = f"agent{n}"
                self._cli("users", "add", user, "--account", "acme", "--workspace", WORKSPACE,
                          "--grants", f"{SERVICE}:write")  # fmt: skip
                self._cli("credentials", "set", SERVICE, "--user", user, stdin="vendor-key-" * 3)
                for bound in (False, True) if self.dpop else (False,):
                    out = self.root / f"{user}{'-dpop' if bound else ''}.json"
                    self._cli(
                        "keys", "issue", "--store", self.store, "--user", user,
                        "--workspace", WORKSPACE, "--out", str(out),
                        "--token-url", f"{self.origin}/oauth/token",
                        "--resource-url", self.origin, *(() if bound else ("--bearer",)),
                    )  # fmt: skip
                    if bound:
                        self.dpop_files.append(out)
                    else:
                        self.bearer_keys.append(json.loads(out.read_text())["access_key"])
        finally:
            if saved is None:
                os.environ.pop("AGENTGUARD_KEK", None)
            else:
                os.environ["AGENTGUARD_KEK"] = saved

    def start(
        self, processes: Processes, prefix: list[str], workers: int = 1
    ) -> subprocess.Popen[bytes]:
        """``agentguard serve`` (behind ``prefix``, e.g. a ``taskset``), once it is ready."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
        env["AGENTGUARD_KEK"] = self.kek
        argv = [*prefix, sys.executable, "-m", "agentguard.cli", "serve",
                "--config", str(self.root / "agentguard.toml"), "--no-operator",
                "--workers", str(workers)]  # fmt: skip
        process = processes.start(argv, self.root / "serve.log", env)
        wait_http(self.origin + "/readyz", 60)
        return process

    def bearer_headers(self) -> Path:
        """One header line per agent: the agents' Bearer keys, taken in turn."""
        path = self.root / "bearer.headers"
        path.write_text("".join(f"Authorization: Bearer {key}\n" for key in self.bearer_keys))
        return path

    def dpop_headers(self, path: str, count: int) -> Path:
        """``count`` header lines, each with a fresh DPoP proof, the agents taken in turn."""
        agents = [parse_credentials(file.read_bytes()) for file in self.dpop_files]
        url = self.origin + path
        lines = []
        for n in range(count):
            agent = agents[n % len(agents)]
            assert agent.dpop_key is not None
            key = agent.access_key.reveal()
            proof = agent.dpop_key.proof("GET", url, access_key=key, jti=secrets.token_hex(12))
            lines.append(f"Authorization: DPoP {key}\tDPoP: {proof}\n")
        target = self.root / "dpop.headers"
        target.write_text("".join(lines))
        return target
