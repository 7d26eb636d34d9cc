"""``agentguard serve --workers N``: several processes on one port, one store, one audit chain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard.audit import verify_chain
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeUpstream
from tests.product.conftest import RunCLI
from tests.support.servers import LoopbackServer, free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CRM_KEY = "crm-real-key-" + "5" * 20
DEADLINE = 30.0


def _settings(port: int, operator_port: int, upstream: str) -> str:
    return f"""
public_origin = "http://127.0.0.1:{port}"
[store]
url = "sqlite:///agentguard.db"
[server]
host = "127.0.0.1"
port = {port}
graceful_timeout = 20
[operator]
port = {operator_port}
[[services]]
name = "crm"
base_url = "{upstream}/v2"
allow_insecure_http = true
"""


def _records(log: Path) -> list[dict[str, object]]:
    lines = log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _served_by(log: Path) -> set[object]:
    return {r["pid"] for r in _records(log) if r.get("path") == "/crm/contacts"}


def _children(pid: int) -> set[int]:
    """The live worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in command and _alive(int(child)):
                found.add(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"not within {DEADLINE} s: {what}")


@contextmanager
def _serving(
    tmp_path: Path, cli: RunCLI, kek: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, str, Path]]:
    upstream = FakeUpstream("crm", accepted={CRM_KEY})
    with LoopbackServer(upstream) as vendor:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        config = tmp_path / "agentguard.toml"
        config.write_text(_settings(port, free_port(), vendor.url))
        for argv in (
            ("accounts", "add", "acme"),
            ("workspaces", "add", "sales", "--account", "acme"),
            ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
            ("users", "grant", "alice", "crm", "read"),
        ):
            assert cli(*argv, "--config", str(config)).code == 0
        assert cli("credentials", "set", "crm", "--user", "alice", "--config", str(config),
                   stdin=CRM_KEY).code == 0  # fmt: skip
        out = tmp_path / "alice.json"
        issued = cli("keys", "issue", "--config", str(config), "--user", "alice", "--workspace",
                     "sales", "--bearer", "--out", str(out), "--token-url",
                     f"{origin}/oauth/token")  # fmt: skip
        assert issued.code == 0, issued.err
        key = json.loads(out.read_text())["access_key"]
        log = tmp_path / "serve.log"
        env = {**os.environ, "AGENTGUARD_KEK": kek, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "agentguard.cli", "serve", "--config", str(config),
                   "--workers", "2"]  # fmt: skip
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
            )
        try:
            yield process, origin, key, log
        finally:
            workers = _children(process.pid) if _alive(process.pid) else set()
            if process.poll() is None:
                process.kill()
                process.wait()
            for pid in workers:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _call(origin: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    try:
        return httpx.get(origin + "/crm/contacts", headers=headers, timeout=10).status_code
    except httpx.TransportError:
        return 0


def test_workers_share_the_port_survive_a_killed_worker_and_drain_on_sigterm(
    tmp_path: Path, cli: RunCLI, kek: str
) -> None:
    with _serving(tmp_path, cli, kek) as (process, origin, key, log):
        _wait_for(lambda: _call(origin, key) == 200 or process.poll() is not None, "ready")
        assert process.poll() is None, log.read_text()
        workers = _children(process.pid)
        assert len(workers) == 2, workers
        with ThreadPoolExecutor(8) as pool:

            def both_served() -> bool:
                assert set(pool.map(lambda _: _call(origin, key), range(16))) == {200}
                return _served_by(log) >= workers

            _wait_for(both_served, "both workers answering on the one port")

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_children(process.pid) - {victim}) == 2, "a replacement worker")
        replacement = (_children(process.pid) - workers).pop()
        _wait_for(lambda: (_call(origin, key) == 200 and replacement in _served_by(log))
                  or _call(origin, key) != 200, "the replacement answering")  # fmt: skip
        assert _call(origin, key) == 200

        survivors = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) == -signal.SIGTERM
        assert not any(_alive(pid) for pid in survivors), "a worker outlived the parent"

    records = _records(log)
    assert any(f"ended with code {-signal.SIGKILL}" in str(r["msg"]) for r in records)
    stopped = [r["pid"] for r in records if str(r["msg"]).startswith("gateway stopped")]
    assert set(stopped) >= survivors, "a worker did not drain (flush its audit writer)"

    async def entries() -> list[object]:
        async with SQLiteStore(tmp_path / "agentguard.db") as store:
            read = await store.read()
            assert verify_chain(read) is None
            return [entry.event().get("path") for entry in read]

    paths = anyio.run(entries)
    served = sum(1 for r in records if r.get("path") == "/crm/contacts" and r.get("status") == 200)
    assert paths.count("/crm/contacts") == served, "every answered call is in the one chain"
    text = log.read_text()
    assert CRM_KEY not in text and key not in text and kek not in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--workers", "0"), "--workers is 1 or more"),
        (("--workers", "2", "--store", "memory://"), "memory://"),
    ],
)
def test_workers_refuse_what_processes_cannot_share(
    tmp_path: Path, cli: RunCLI, kek: str, extra: tuple[str, ...], message: str
) -> None:
    config = tmp_path / "agentguard.toml"
    config.write_text(_settings(free_port(), free_port(), "http://127.0.0.1:9"))
    result = cli("serve", "--config", str(config), *extra)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err
