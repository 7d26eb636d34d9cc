"""The app examples run as their docstrings say, as real processes driven from outside.

Each example is started with ``python -m examples.<name> --print-keys`` in a fresh directory,
the printed access key opens it and no key gets a 401, then ``agentguard users disable alice
--store sqlite:///agentguard-examples.db`` (the documented command) closes it on the next call.
The agent script, pointed at a disabled user's keys, ends with one line and status 1.
Examples started one after another on one store share alice (each adds the grants it needs),
SIGTERM leaves no unsaved write-ahead log, and the RLS example refuses a database it cannot
use before printing keys.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard import Guard, IssuedKeys
from agentguard.storage import open_store
from agentguard.testing import make_user
from examples import starlette_app
from tests.support.servers import free_port

REPO = Path(__file__).parents[1]
STORE = "sqlite:///agentguard-examples.db"  # the examples' default, relative to their directory
DEADLINE = 30.0


def _environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AGENTGUARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def agentguard(directory: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The ``agentguard`` command, run in ``directory`` as a user would type it."""
    command = [sys.executable, "-m", "agentguard.cli", *argv]
    return subprocess.run(
        command,
        check=False,
        cwd=directory,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Example:
    """``python -m examples.<name> --print-keys --port N`` in ``directory``, until stopped."""

    def __init__(self, name: str, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        command = [sys.executable, "-m", f"examples.{name}", "--print-keys"]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), *extra],
            cwd=directory,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.printed: dict[str, str] = {}
        self.errors = ""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _fail(self, what: str) -> None:
        self.stop()
        pytest.fail(f"{what}; stderr:\n{self.errors[-2000:]}")

    def start(self) -> Example:
        deadline = time.monotonic() + DEADLINE
        while "serving on" not in self.printed:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self._fail("the example printed no keys in time")
            if line is None:
                self._fail(f"the example exited with {self.process.wait()}")
                return self
            label, _, value = line.partition(":")
            self.printed[label.strip()] = value.strip()
        while True:
            try:
                httpx.get(self.url, timeout=1)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self._fail("the example did not start listening")
                time.sleep(0.05)

    def stop(self) -> None:
        """End the process (it is ours: by its handle), then collect stderr and close the pipes."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None and self.process.stderr is not None
        if not self.process.stderr.closed:
            self.errors = self.process.stderr.read()
            self.process.stderr.close()
            self.process.stdout.close()

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.printed['access key']}"}


@pytest.fixture
def examples(tmp_path: Path) -> Iterator[list[Example]]:
    started: list[Example] = []
    yield started
    for example in started:
        example.stop()


def run(examples: list[Example], name: str, directory: Path, *extra: str) -> Example:
    example = Example(name, directory, *extra)
    examples.append(example)
    return example.start()


def disable_alice(directory: Path) -> None:
    result = agentguard(directory, "users", "disable", "alice", "--store", STORE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "user alice disabled"


def assert_key_opens_then_closes(
    example: Example, method: str, path: str, json: object = None, **extra: str
) -> None:
    def call(headers: dict[str, str]) -> httpx.Response:
        return httpx.request(
            method, example.url + path, json=json, headers={**headers, **extra}, timeout=10
        )

    assert call(example.bearer()).status_code == 200
    refused = call({})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    disable_alice(example.directory)
    after = call(example.bearer())
    assert after.status_code == 401
    assert after.json()["reason"] == "user_disabled"


def test_store_file_is_private(tmp_path: Path, examples: list[Example]) -> None:
    run(examples, "starlette_app", tmp_path)
    database = tmp_path / "agentguard-examples.db"
    assert database.stat().st_mode & 0o777 == 0o600
    assert set(examples[0].printed) >= {"access key", "refresh key", "serving on"}
    assert examples[0].printed["access key"].startswith("ag_at_")
    assert examples[0].printed["refresh key"].startswith("ag_rt_")


def test_starlette_example(tmp_path: Path, examples: list[Example]) -> None:
    example = run(examples, "starlette_app", tmp_path)
    added = httpx.post(
        example.url + "/crm/contacts", json={"name": "Ada"}, headers=example.bearer()
    )
    assert added.status_code == 201
    renewed = httpx.post(
        example.url + "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": example.printed["refresh key"]},
    )
    assert renewed.status_code == 200
    example.printed["access key"] = renewed.json()["access_token"]
    assert_key_opens_then_closes(example, "GET", "/crm/contacts")


def test_a_second_start_keeps_alice_and_a_disabled_alice_gets_no_keys(
    tmp_path: Path, examples: list[Example]
) -> None:
    first = run(examples, "starlette_app", tmp_path)
    first.stop()
    second = run(examples, "starlette_app", tmp_path)
    assert second.printed["access key"] != first.printed["access key"]
    assert httpx.get(second.url + "/crm/contacts", headers=first.bearer()).status_code == 200
    disable_alice(tmp_path)
    refused = Example("starlette_app", tmp_path)
    examples.append(refused)
    assert refused.process.wait(timeout=DEADLINE) == 1
    refused.stop()
    assert refused.errors.strip() == ("no keys for alice: the user who owns this key is disabled")


def test_fastapi_example(tmp_path: Path, examples: list[Example]) -> None:
    example = run(examples, "fastapi_app", tmp_path)
    summary = httpx.get(example.url + "/reports/summary", headers=example.bearer())
    assert summary.json() == {"contacts": 0}
    assert_key_opens_then_closes(example, "GET", "/crm/contacts")


def test_flask_example(tmp_path: Path, examples: list[Example]) -> None:
    example = run(examples, "flask_app", tmp_path)
    assert httpx.get(example.url + "/healthz").json() == {"ok": True}
    assert_key_opens_then_closes(example, "GET", "/crm/contacts")


def test_mcp_example(tmp_path: Path, examples: list[Example]) -> None:
    example = run(examples, "mcp_server", tmp_path)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "curl", "version": "1"},
        },
    }
    anonymous = httpx.post(example.url + "/mcp", json=initialize)
    assert (
        f'resource_metadata="{example.url}/.well-known/oauth-protected-resource/mcp"'
        in (anonymous.headers["www-authenticate"])
    )
    assert_key_opens_then_closes(
        example, "POST", "/mcp", initialize, Accept="application/json, text/event-stream"
    )


def test_rls_example(tmp_path: Path, examples: list[Example]) -> None:
    import asyncpg

    from tests.backends.services import postgres_dsn, random_name

    dsn = anyio.run(postgres_dsn)
    schema, role = random_name("rls_example"), random_name("rls_role")
    try:
        example = run(
            examples, "rls_app", tmp_path, "--dsn", dsn, "--schema", schema, "--role", role
        )
        added = httpx.post(
            example.url + "/crm/contacts",
            json={"owner_id": "alice", "name": "Ada"},
            headers=example.bearer(),
        )
        assert added.status_code == 201
        listed = httpx.get(example.url + "/crm/contacts", headers=example.bearer())
        assert [row["name"] for row in listed.json()] == ["Ada"]
        assert_key_opens_then_closes(example, "GET", "/crm/contacts")
    finally:
        for example in examples:
            example.stop()

        async def drop() -> None:
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                await admin.execute(f"DROP ROLE IF EXISTS {role}")
            finally:
                await admin.close()

        anyio.run(drop)


def _mcp_call(example: Example, tool: str, arguments: dict[str, str]) -> dict[str, object]:
    """Initialize an MCP session on ``example`` with its printed key, call ``tool``, return it."""
    headers = {**example.bearer(), "Accept": "application/json, text/event-stream"}

    def post(message: dict[str, object], session: str | None = None) -> httpx.Response:
        extra = {"mcp-session-id": session} if session else {}
        return httpx.post(example.url + "/mcp", json=message, headers={**headers, **extra})

    opened = post(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        }
    )
    assert opened.status_code == 200, opened.text
    session = opened.headers.get("mcp-session-id")
    post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    called = post(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        },
        session,
    )
    assert called.status_code == 200, called.text
    if called.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in called.text.splitlines() if line.startswith("data:")]
        reply: dict[str, object] = json.loads(data[-1])
    else:
        reply = called.json()
    return reply


def test_examples_started_one_after_another_share_alice(
    tmp_path: Path, examples: list[Example]
) -> None:
    """Each example adds the grants it needs to the alice an earlier one created, none removed."""
    first = run(examples, "starlette_app", tmp_path)
    assert "grants 'crm:write'" in first.printed["user"]
    first.stop()
    second = run(examples, "fastapi_app", tmp_path)
    assert "grants 'crm:write reports:read'" in second.printed["user"]
    summary = httpx.get(second.url + "/reports/summary", headers=second.bearer())
    assert (summary.status_code, summary.json()) == (200, {"contacts": 0})
    still = httpx.get(second.url + "/crm/contacts", headers=first.bearer())
    assert still.status_code == 200  # the first example's key keeps working
    second.stop()
    third = run(examples, "mcp_server", tmp_path)
    third_grants = "crm:write notes:write reports:read"
    assert f"grants {third_grants!r}" in third.printed["user"]
    reply = _mcp_call(third, "add_note", {"text": "hello"})
    assert "error" not in reply, reply
    result = reply["result"]
    assert isinstance(result, dict) and result.get("isError") is not True, reply
    assert "added note 1" in json.dumps(result)
    listed = agentguard(tmp_path, "users", "list", "--store", STORE)  # what the store holds
    assert listed.stdout.split() == ["alice", "demo", "enabled", *third_grants.split()]


@pytest.mark.parametrize("name", ["starlette_app", "fastapi_app", "flask_app", "mcp_server"])
def test_sigterm_closes_the_store(tmp_path: Path, examples: list[Example], name: str) -> None:
    """After SIGTERM SQLite has checkpointed: no write-ahead log left behind, or an empty one."""
    example = run(examples, name, tmp_path)
    path = "/mcp" if name == "mcp_server" else "/crm/contacts"
    httpx.get(example.url + path, headers=example.bearer(), timeout=10)  # audited: a write
    wal = tmp_path / "agentguard-examples.db-wal"
    assert wal.exists() and wal.stat().st_size > 0  # the running app holds the log open
    example.stop()  # SIGTERM
    # uvicorn shuts down gracefully, then re-raises the signal; werkzeug returns normally
    assert example.process.returncode in (0, -signal.SIGTERM), example.errors[-2000:]
    assert "Traceback" not in example.errors
    assert not wal.exists() or wal.stat().st_size == 0


def test_rls_example_refuses_a_database_it_cannot_reach(tmp_path: Path) -> None:
    """No keys printed, no server started: one line on stderr and exit status 2."""
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/app"
    command = [sys.executable, "-m", "examples.rls_app", "--dsn", dsn, "--print-keys"]
    result = subprocess.run(
        command, check=False, cwd=tmp_path, env=_environment(), capture_output=True, text=True,
        timeout=DEADLINE,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "rls_app: cannot use the contacts database (--dsn): "
    ), result.stderr
    assert not (tmp_path / "agentguard-examples.db").exists()


def test_rls_example_refuses_a_missing_database(tmp_path: Path) -> None:
    from tests.backends.services import postgres_dsn

    dsn = anyio.run(postgres_dsn)
    missing = dsn.rsplit("/", 1)[0] + "/agentguard_no_such_database"
    command = [sys.executable, "-m", "examples.rls_app", "--dsn", missing, "--print-keys"]
    result = subprocess.run(
        command, check=False, cwd=tmp_path, env=_environment(), capture_output=True, text=True,
        timeout=DEADLINE,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "rls_app: cannot use the contacts database (--dsn): "
        'database "agentguard_no_such_database" does not exist'
    ]


def agent_script(credentials: Path, gateway: str) -> subprocess.CompletedProcess[str]:
    command: Sequence[str] = [
        sys.executable,
        str(REPO / "examples" / "agent_script.py"),
        "--credentials",
        str(credentials),
        "--gateway",
        gateway,
    ]
    return subprocess.run(
        command, check=False, env=_environment(), capture_output=True, text=True, timeout=DEADLINE
    )


def test_agent_script_stops_with_one_line_when_the_user_is_disabled(
    tmp_path: Path, examples: list[Example]
) -> None:
    example = run(examples, "starlette_app", tmp_path)
    issued = agentguard(
        tmp_path, "keys", "issue", "--store", STORE, "--user", "alice", "--workspace", "demo",
        "--out", "credentials.json", "--token-url", f"{example.url}/oauth/token",
        "--resource-url", example.url, "--bearer",  # this example takes no DPoP proofs
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    disable_alice(tmp_path)
    result = agent_script(tmp_path / "credentials.json", example.url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "agent stopped: refresh refused: invalid_grant (user_disabled: the user is disabled); "
        "issue new keys with `agentguard keys issue`"
    ]
    assert result.stdout == ""


def test_agent_script_without_a_credentials_file_says_so(tmp_path: Path) -> None:
    result = agent_script(tmp_path / "missing.json", "http://127.0.0.1:9")
    assert (result.returncode, "Traceback" in result.stderr) == (1, False)
    assert result.stderr.splitlines() == [
        f"agent stopped: no credentials file at {tmp_path / 'missing.json'}; "
        "create one with 'agentguard keys issue'"
    ]


@pytest.mark.anyio
async def test_starlette_example_in_process(tmp_path: Path) -> None:
    """The same app through httpx's ASGI transport: levels, per-user data, a read-only POST."""
    url = f"sqlite:///{tmp_path / 'examples.db'}"
    store = open_store(url)
    for user_id, grants in (("reader", "crm:read"), ("writer", "crm:write")):
        await make_user(store, user_id=user_id, grants=grants)
    reader = await Guard(store).issuer.issue("reader", "ws-1")
    writer = await Guard(store).issuer.issue("writer", "ws-1")
    await store.close()

    def auth(keys: IssuedKeys) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys.access_key.reveal()}"}

    transport = httpx.ASGITransport(app=starlette_app.create_app(url))
    async with httpx.AsyncClient(transport=transport, base_url="http://example.test") as client:
        added = await client.post("/crm/contacts", json={"name": "Ada"}, headers=auth(writer))
        assert added.status_code == 201
        denied = await client.post("/crm/contacts", json={"name": "Eve"}, headers=auth(reader))
        assert denied.status_code == 403
        found = await client.post("/crm/search", json={"q": "ad"}, headers=auth(writer))
        assert found.json() == {"found": ["Ada"]}
        searched = await client.post("/crm/search", json={"q": "x"}, headers=auth(reader))
        assert searched.status_code == 200  # a POST that only reads needs crm:read
        listed = await client.get("/crm/contacts", headers=auth(reader))
        assert listed.json() == {"contacts": []}  # each user sees their own
