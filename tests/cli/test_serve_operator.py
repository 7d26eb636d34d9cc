"""``agentguard serve`` with its operator listener: a subprocess answering on two loopback ports,
operator tokens accepted and agent keys refused on one, the operator endpoints absent from the
other, both drained on SIGTERM; the listener's refusals to start, one line with exit code 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard._clock import SystemClock
from agentguard._model import ApprovalRecord
from agentguard.storage import SQLiteStore
from tests.cli.conftest import RunCLI
from tests.support.approval_records import held_call
from tests.support.servers import free_port

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

DEADLINE = 30.0


def _hold(work: Path) -> ApprovalRecord:
    async def create() -> ApprovalRecord:
        async with SQLiteStore(work / "agentguard.db") as store:
            now = SystemClock().now()
            stored: ApprovalRecord = await store.create_approval(held_call(now), now=now)
            return stored

    return anyio.run(create)


def _actions(work: Path) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        async with SQLiteStore(work / "agentguard.db") as store:
            return [entry.event() for entry in await store.read()]

    return anyio.run(read)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not become healthy: {log.read_text()}")


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.fixture
def serve(clean_env: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; killed if the test left one running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _start(
    work: Path, started: list[subprocess.Popen[bytes]], *argv: str
) -> tuple[subprocess.Popen[bytes], Path]:
    log = work / f"serve-{len(started)}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentguard.cli", "serve", *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
    started.append(process)
    return process, log


def test_both_listeners_answer_and_drain_on_sigterm(
    cli: RunCLI, clean_env: Path, serve: list[subprocess.Popen[bytes]]
) -> None:
    assert cli("init", "--no-kek").code == 0
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
    ):
        assert cli(*argv).code == 0
    issued = cli(
        "keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "agent.json",
        "--token-url", "http://127.0.0.1/oauth/token", "--bearer",
    )  # fmt: skip
    assert issued.code == 0, issued.err
    agent_key = json.loads((clean_env / "agent.json").read_text())["access_key"]
    token = cli("operators", "issue", "--name", "alice").out.strip()
    held = _hold(clean_env)

    port, operator_port = free_port(), free_port()
    process, log = _start(
        clean_env, serve, "--port", str(port), "--operator-port", str(operator_port)
    )
    gateway, operator = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{operator_port}"
    _wait_healthy(gateway, process, log)
    _wait_healthy(operator, process, log)

    with httpx.Client(base_url=operator, timeout=10) as client:
        listed = client.get("/approvals", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200, (listed.text, log.read_text()[-3000:])
        assert [d["id"] for d in listed.json()["approvals"]] == [held.id]
        refused = client.get("/approvals", headers={"Authorization": f"Bearer {agent_key}"})
        assert refused.status_code == 401
        assert "agent keys are not accepted on the operator listener" in refused.text
        assert client.get("/approvals").status_code == 401
        decided = client.post(
            f"/approvals/{held.id}/approve", headers={"Authorization": f"Bearer {token}"}
        )
        assert decided.status_code == 200 and decided.json()["decided_by"] == "alice"
    on_gateway = httpx.get(
        f"{gateway}/approvals", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert on_gateway.status_code == 404  # the operator endpoints live on their own listener

    process.send_signal(signal.SIGTERM)
    assert process.wait(DEADLINE) in (0, -signal.SIGTERM)
    assert _refuses_connections(port) and _refuses_connections(operator_port)
    text = log.read_text()
    assert f"operator listener on http://127.0.0.1:{operator_port}" in text
    assert "gateway stopped" in text
    for secret in (token, agent_key):
        assert secret not in text
    decisions = [e for e in _actions(clean_env) if e["action"] == "approval.decide"]
    assert [(e["detail"]["operator"], e["detail"]["via"]) for e in decisions] == [  # type: ignore[index]
        ("alice", "api")
    ]


def test_no_operator_starts_only_the_gateway(
    cli: RunCLI, clean_env: Path, serve: list[subprocess.Popen[bytes]]
) -> None:
    assert cli("init", "--no-kek").code == 0
    port, operator_port = free_port(), free_port()
    process, log = _start(
        clean_env, serve, "--port", str(port), "--operator-port", str(operator_port),
        "--no-operator",
    )  # fmt: skip
    _wait_healthy(f"http://127.0.0.1:{port}", process, log)
    assert _refuses_connections(operator_port)
    process.send_signal(signal.SIGTERM)
    assert process.wait(DEADLINE) in (0, -signal.SIGTERM)
    assert "operator listener on" not in log.read_text()


def test_an_operator_port_in_use_is_one_line_and_exit_2(cli: RunCLI, clean_env: Path) -> None:
    assert cli("init", "--no-kek").code == 0
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        result = cli("serve", "--port", str(free_port()), "--operator-port", str(busy))
    line = result.one_line_error(2)
    assert line.startswith(f"agentguard serve: cannot listen for operators on 127.0.0.1:{busy}")
    assert "--operator-port" in line


def test_the_same_port_for_both_listeners_is_refused(cli: RunCLI) -> None:
    assert cli("init", "--no-kek").code == 0
    result = cli("serve", "--check", "--port", "8090", "--operator-port", "8090")
    line = result.one_line_error(2)
    assert "the operator listener and the gateway both want port 8090" in line


def test_a_non_loopback_operator_host_is_a_warning(cli: RunCLI, clean_env: Path) -> None:
    assert cli("init", "--no-kek").code == 0
    config = clean_env / "agentguard.toml"
    text = config.read_text()
    operator = text.index("[operator]")  # the section agentguard init writes
    host = text.index('host = "127.0.0.1"', operator)
    config.write_text(text[:host] + 'host = "0.0.0.0"' + text[host + len('host = "127.0.0.1"') :])
    result = cli("serve", "--check")
    assert result.code == 0, result.err
    assert "warning: the operator listener binds 0.0.0.0, which is not a loopback" in result.err
    loopback = cli("serve", "--check", "--operator-port", "9999")
    config.write_text(config.read_text().replace('"0.0.0.0"', '"::1"'))
    assert "loopback" not in cli("serve", "--check").err
    assert loopback.code == 0


def test_an_operator_port_out_of_range_is_refused(cli: RunCLI) -> None:
    assert cli("init", "--no-kek").code == 0
    line = cli("serve", "--check", "--operator-port", "70000").one_line_error(2)
    assert "--operator-port is from 0 to 65535" in line
