"""The app examples run as their docstrings say, as real processes driven from outside.

Each example is started with ``python -m examples.<name> --print-keys`` in a fresh directory,
the printed access key opens it and no key gets a 401, then ``agentguard users disable alice
--store sqlite:///agentguard-examples.db`` (the documented command) closes it on the next call.
The agent script, pointed at a disabled user's keys, ends with one line and status 1.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard import Guard
from agentguard.model import IssuedKeys
from agentguard.storage.urls import open_store
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
