"""``agentguard serve`` as operators run it: a subprocess, a settings file, SIGTERM to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard.audit import AuditEntry
from agentguard.client import AgentAuth
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeTokenExchange, FakeUpstream, RecordedRequest
from tests.product.conftest import RunCLI
from tests.support.servers import LoopbackServer, free_port

CRM_KEY = "crm-real-key-" + "7" * 20
AUTOMATIONS_KEY = "automations-real-key-" + "8" * 20
PROJECTS_ADMIN = "projects-admin-key-" + "9" * 20

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class SlowAutomations:
    """A vendor whose ``/slow`` takes a while, so SIGTERM lands mid-request."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.upstream = FakeUpstream("automations", accepted={AUTOMATIONS_KEY}, respond=self.answer)

    async def answer(self, request: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        if request.header("authorization") != f"Bearer {AUTOMATIONS_KEY}":
            return 401, [("content-type", "application/json")], b'{"error": "bad key"}'
        if request.path.endswith("/slow"):
            self.started.set()
            await anyio.sleep(2)
        body = json.dumps({"service": "automations", "path": request.path}).encode()
        return 200, [("content-type", "application/json")], body


def _settings_text(tmp_path: Path, port: int, upstreams: dict[str, str]) -> str:
    return f"""
public_origin = "http://127.0.0.1:{port}"
[store]
url = "sqlite:///agentguard.db"
[server]
host = "127.0.0.1"
port = {port}
graceful_timeout = 20
[logging]
level = "info"
format = "json"
[audit]
instance = "gw-test"
origin = "audit.test/agentguard"
checkpoint_key_file = "audit.pem"
checkpoint_key_name = "audit.test"
checkpoint_dir = "checkpoints"
checkpoint_interval = 3600
[[services]]
name = "crm"
base_url = "{upstreams["crm"]}/v2"
placement = "header"
parameter = "X-Api-Key"
allow_insecure_http = true
[[services]]
name = "automations"
base_url = "{upstreams["automations"]}/api"
allow_insecure_http = true
[[services]]
name = "projects"
base_url = "{upstreams["projects"]}"
allow_insecure_http = true
[minters.projects]
token_url = "{upstreams["token"]}/token"
allow_insecure_http = true
"""


@pytest.fixture
def vendors() -> Iterator[tuple[dict[str, str], FakeUpstream, SlowAutomations, FakeUpstream]]:
    crm = FakeUpstream("crm", accepted={CRM_KEY}, header="x-api-key")
    automations = SlowAutomations()
    projects = FakeUpstream("projects")
    exchange = FakeTokenExchange(admin_key=PROJECTS_ADMIN)
    servers = {
        "crm": LoopbackServer(crm),
        "automations": LoopbackServer(automations.upstream),
        "projects": LoopbackServer(projects),
        "token": LoopbackServer(exchange),
    }
    for server in servers.values():
        server.__enter__()
    try:
        yield {name: s.url for name, s in servers.items()}, crm, automations, projects
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("the gateway did not become healthy")


def _x_api_key(request: httpx.Request, key: str) -> None:
    request.headers["X-Api-Key"] = key


def _entries(database: Path) -> list[AuditEntry]:
    async def read() -> list[AuditEntry]:
        async with SQLiteStore(database) as store:
            return await store.read()

    return anyio.run(read)


def test_serve_runs_an_agent_session_and_drains_on_sigterm(  # noqa: PLR0915 - one story
    tmp_path: Path,
    cli: RunCLI,
    kek: str,
    vendors: tuple[dict[str, str], FakeUpstream, SlowAutomations, FakeUpstream],
) -> None:
    urls, crm, automations, projects = vendors
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    config = tmp_path / "agentguard.toml"
    config.write_text(_settings_text(tmp_path, port, urls))
    vkey = cli("audit", "keygen", "--name", "audit.test", "--out", str(tmp_path / "audit.pem"))
    assert vkey.code == 0, vkey.err
    store = f"sqlite:///{tmp_path / 'agentguard.db'}"
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
        ("users", "grant", "alice", "crm", "read"),
        ("users", "grant", "alice", "automations", "write"),
        ("users", "grant", "alice", "projects", "read"),
    ):
        result = cli(*argv, "--config", str(config))
        assert result.code == 0, result.err
    for service, owner, secret in (
        ("crm", ("--user", "alice"), CRM_KEY),
        ("automations", ("--user", "alice"), AUTOMATIONS_KEY),
        ("projects", ("--account", "acme"), PROJECTS_ADMIN),
    ):
        result = cli("credentials", "set", service, *owner, "--config", str(config), stdin=secret)
        assert result.code == 0, result.err
        assert secret not in result.out + result.err
    credentials = tmp_path / "agent" / "credentials.json"
    issued = cli(
        "keys", "issue", "--store", store, "--user", "alice", "--workspace", "sales",
        "--out", str(credentials), "--token-url", f"{origin}/oauth/token",
        "--resource-url", origin,
    )  # fmt: skip
    assert issued.code == 0, issued.err

    log = tmp_path / "serve.log"
    env = {**os.environ, "AGENTGUARD_KEK": kek, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentguard.cli",
                "serve",
                "--config",
                str(config),
                "--no-operator",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        _wait_healthy(origin, process, log)
        assert httpx.get(origin + "/readyz").json() == {"status": "ready"}
        auth = AgentAuth.from_file(credentials)
        crm_auth = AgentAuth.from_file(credentials, placement=_x_api_key)
        with httpx.Client(base_url=origin, auth=crm_auth, timeout=30) as crm_client:
            assert crm_client.get("/crm/contacts").status_code == 200
        assert crm.requests[-1].header("x-api-key") == CRM_KEY
        with httpx.Client(base_url=origin, auth=auth, timeout=30) as client:
            assert client.post("/automations/runs", json={"flow": "x"}).status_code == 200
            boards = client.get("/projects/boards")
            assert boards.status_code == 200, boards.text
            assert projects.requests[-1].header("authorization") == "Bearer minted-alice-1"
            assert client.post("/projects/boards").status_code == 403  # read only
            assert auth.renew(fraction=0)  # refresh through the gateway's token endpoint
            assert client.get("/projects/boards").status_code == 200

            slow: list[httpx.Response] = []
            worker = threading.Thread(target=lambda: slow.append(client.get("/automations/slow")))
            worker.start()
            assert automations.started.wait(10)
            process.send_signal(signal.SIGTERM)
            worker.join(30)
        assert slow and slow[0].status_code == 200, "the in-flight request did not finish"
        assert slow[0].json()["path"] == "/api/slow"
        # uvicorn re-raises the signal once it has drained, as a killed process would exit
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    entries = _entries(tmp_path / "agentguard.db")
    paths = [entry.event().get("path") for entry in entries]
    assert "/automations/slow" in paths, "the drained request was not audited"
    text = log.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(r.get("path") == "/automations/slow" and r.get("status") == 200 for r in records)
    assert all("request_id" in r for r in records if r.get("logger") == "agentguard.access")
    assert any(r["msg"].startswith("gateway stopped") for r in records), text
    keys = json.loads(credentials.read_text())
    for secret in (CRM_KEY, AUTOMATIONS_KEY, PROJECTS_ADMIN, keys["access_key"], kek):
        assert secret not in text
    verify = cli(
        "audit", "verify", "--store", store, "--checkpoints", str(tmp_path / "checkpoints"),
        "--vkey", vkey.out.strip(), "--origin", "audit.test/agentguard",
    )  # fmt: skip
    assert verify.code == 0, verify.out
    assert f"anchored at size {len(entries)}" in verify.out  # the shutdown checkpoint
