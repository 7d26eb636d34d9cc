"""A real ``agentguard serve`` (gateway and operator listener) in front of a recording fake
vendor, both subprocesses on loopback ports, configured with approvals, costs and budgets.

Every test talks to it over real sockets. ``store="postgres"`` puts the store in a fresh schema
of the PostgreSQL server at 127.0.0.1:5432 (database ``test``), dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

HERE = Path(__file__).parent
SRC = str(Path(__file__).resolve().parents[3] / "src")
PG = "postgresql://postgres@127.0.0.1:5432/test"

ROUTES = """
[[services]]
name = "crm"
base_url = "http://127.0.0.1:{up}/v2"
allow_insecure_http = true
placement = "header"
parameter = "X-Api-Key"

[[services.routes]]
path = "/items"
approval = ["DELETE"]

[[services.routes]]
path = "/contacts"
approval = ["DELETE", "POST", "PUT", "PATCH"]

[[services.routes]]
path = "/costly"
cost = {{ DELETE = 50 }}

[[services.routes]]
path = "/"
cost = 0

[[services]]
name = "pay"
base_url = "http://127.0.0.1:{up}/pay"
allow_insecure_http = true

[[services.routes]]
path = "/"
approval = true
cost = 3

[approvals]
ttl = 600

[[budgets]]
name = "costly-{tag}"
service = "crm"
per = "user"
limit = 60
window = 86400

[[budgets]]
name = "pay-{tag}"
service = "pay"
per = "user"
limit = 6
window = 86400
"""


@dataclass
class Gateway:
    url: str
    operator_url: str
    agent_key: str
    operator_token: str
    upstream_log: Path
    log: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def upstream(self) -> list[dict[str, object]]:
        if not self.upstream_log.exists():
            return []
        return [json.loads(line) for line in self.upstream_log.read_text().splitlines() if line]

    def op(self, method: str, path: str) -> httpx.Response:
        return httpx.request(
            method, self.operator_url + path,
            headers={"Authorization": f"Bearer {self.operator_token}"}, timeout=10,
        )  # fmt: skip

    def approve(self, approval_id: str) -> None:
        decided = self.op("POST", f"/approvals/{approval_id}/approve")
        assert decided.status_code == 200, decided.text

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        port = int(self.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(data)
            out = b""
            try:
                while chunk := sock.recv(65536):
                    out += chunk
            except TimeoutError:
                pass
        return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    env["PYTHONPATH"] = SRC + os.pathsep + str(HERE.parents[1])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli(work: Path, *argv: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", *argv],
        cwd=work, env=_env(), input=stdin, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout.decode()


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{url} never became healthy: {log.read_text()}")


def _start_gateway(work: Path, store: str) -> Iterator[Gateway]:
    tag = secrets.token_hex(4)
    schema = f"attack20_{tag}"
    up_port, port, op_port = free_port(), free_port(), free_port()
    url = "sqlite:///agentguard.db" if store == "sqlite" else f"{PG}?schema={schema}"
    _cli(work, "init", "--store", url, "--public-origin", f"http://127.0.0.1:{port}")
    settings = work / "agentguard.toml"
    settings.write_text(settings.read_text() + ROUTES.format(up=up_port, tag=tag))
    _cli(work, "accounts", "add", "acme")
    _cli(work, "workspaces", "add", "sales", "--account", "acme")
    _cli(work, "users", "add", "alice", "--account", "acme", "--workspace", "sales",
         "--grants", "crm:write pay:write")  # fmt: skip
    for service in ("crm", "pay"):
        _cli(work, "credentials", "set", service, "--user", "alice",
             stdin=f"vendor-secret-{service}-{tag}".encode())  # fmt: skip
    _cli(work, "keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "alice.json",
         "--token-url", f"http://127.0.0.1:{port}/oauth/token", "--bearer")  # fmt: skip
    agent_key = json.loads((work / "alice.json").read_text())["access_key"]
    token = _cli(work, "operators", "issue", "--name", "attacker-test").strip()
    upstream_log = work / "upstream.jsonl"
    gateway = Gateway(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{op_port}", agent_key, token,
        upstream_log, work / "serve.log",
    )  # fmt: skip
    try:
        with (work / "upstream.log").open("wb") as sink:
            gateway.processes.append(subprocess.Popen(
                [sys.executable, str(HERE / "upstream_recorder.py"), str(up_port),
                 str(upstream_log)], stdout=sink, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        with gateway.log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "agentguard.cli", "serve", "--port", str(port),
                 "--operator-port", str(op_port)],
                cwd=work, env=_env(), stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
            gateway.processes.append(process)
        _wait(gateway.url, process, gateway.log)
        _wait(gateway.operator_url, process, gateway.log)
        yield gateway
    finally:
        for process in gateway.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if store == "postgres":
            subprocess.run(
                [sys.executable, "-c",
                 "import asyncio, asyncpg, sys\n"
                 "async def main():\n"
                 f"    c = await asyncpg.connect('{PG}')\n"
                 f"    await c.execute('DROP SCHEMA IF EXISTS {schema} CASCADE')\n"
                 "    await c.close()\n"
                 "asyncio.run(main())"],
                check=False, timeout=30,
            )  # fmt: skip


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    yield from _start_gateway(tmp_path, "sqlite")


@pytest.fixture
def pg_gateway(tmp_path: Path) -> Iterator[Gateway]:
    yield from _start_gateway(tmp_path, "postgres")
