"""A real ``agentguard serve`` with ``[limits] store`` on Redis, hit by a burst over loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gates.attack3.support import _env, cli
from tests.support.servers import free_port

RECORDER = Path(__file__).parents[1] / "attack" / "upstream_recorder.py"

LIMITS = """
[[services]]
name = "crm"
base_url = "http://127.0.0.1:{up}/v2"
allow_insecure_http = true

[[budgets]]
name = "crm-hourly"
service = "crm"
per = "workspace"
limit = 1000000
window = 3600

[[rate_limits]]
name = "per-key"
rate = 100000
per = "key_family"

[limits]
store = "redis://127.0.0.1:6379/12"
"""


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


@pytest.fixture
def redis_gateway(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    up, port, op_port = free_port(), free_port(), free_port()
    done = cli(tmp_path, "init", "--public-origin", f"http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    settings = tmp_path / "agentguard.toml"
    settings.write_text(settings.read_text() + LIMITS.format(up=up))
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales",
         "--grants", "crm:write"),
        ("keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "alice.json",
         "--token-url", f"http://127.0.0.1:{port}/oauth/token", "--bearer"),
    ):  # fmt: skip
        done = cli(tmp_path, *argv)
        assert done.returncode == 0, (argv, done.stderr)
    done = cli(tmp_path, "credentials", "set", "crm", "--user", "alice", stdin="vendor-secret")
    assert done.returncode == 0, done.stderr
    key = json.loads((tmp_path / "alice.json").read_text())["access_key"]
    log = tmp_path / "serve.log"
    processes = []
    try:
        with (tmp_path / "upstream.log").open("wb") as sink:
            processes.append(subprocess.Popen(
                [sys.executable, str(RECORDER), str(up), str(tmp_path / "upstream.jsonl")],
                stdout=sink, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        with log.open("wb") as sink:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "agentguard.cli", "serve", "--port", str(port),
                 "--operator-port", str(op_port)],
                cwd=tmp_path, env=_env(), stdout=sink, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        _wait(f"http://127.0.0.1:{port}", processes[-1], log)
        yield f"http://127.0.0.1:{port}", key, log
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_burst_within_the_limits_is_served_not_503(redis_gateway: tuple[str, str, Path]) -> None:
    """300 concurrent calls, far inside the budget and the rate limit: each should reach the
    vendor. Today the Redis limit store's connection pool (redis-py's default of 100, which
    raises instead of waiting) refuses the calls past it with 503 store_unavailable."""
    url, key, log = redis_gateway

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            return await asyncio.gather(*[
                client.get(f"{url}/crm/items/{i}", headers={"Authorization": f"Bearer {key}"})
                for i in range(300)
            ])  # fmt: skip

    responses = asyncio.run(burst())
    statuses = Counter(response.status_code for response in responses)
    outages = [r for r in responses if r.status_code == 503]
    assert not outages, (statuses, outages[0].text, log.read_text()[-1500:])
