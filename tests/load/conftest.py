"""The gateway as operators run it, under load and faults: subprocesses on loopback only.

``agentguard serve`` runs in its own process (so its RSS, file descriptors and threads can be read
from ``/proc/<pid>``), and so does the fake vendor (``python -m uvicorn
tests.load.conftest:upstream_app --factory``), so the load driver, the vendor and the gateway do
not share one interpreter lock. Set-up (accounts, users, credentials, keys) goes through the
operator CLI, in-process.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard.audit import AuditEntry, verify_log
from agentguard.cli import main
from agentguard.storage import open_store
from agentguard.testing import FakeUpstream, RecordedRequest
from agentguard.testing._upstreams import Receive, Scope, Send
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
SERVICE = "crm"
UPSTREAM_KEY = "crm-load-real-key-" + "5" * 20
SLOW_SECONDS = 3.0
WORKSPACE = "sales"

# -- the fake vendor, run by uvicorn in a subprocess ---------------------------------------------


async def _answer(request: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    if request.header("authorization") != f"Bearer {UPSTREAM_KEY}":
        return 401, [("content-type", "application/json")], b'{"error": "bad key"}'
    if request.path.endswith("/slow"):
        await anyio.sleep(SLOW_SECONDS)
    body = json.dumps({"service": SERVICE, "path": request.path, "ok": True}).encode()
    return 200, [("content-type", "application/json")], body


class _Forgetful(FakeUpstream):
    """A :class:`FakeUpstream` that keeps no history (a long run would only grow it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        self.requests.clear()


def upstream_app() -> FakeUpstream:
    """``uvicorn --factory`` entry: the vendor; ``/slow`` answers after ``SLOW_SECONDS``."""
    return _Forgetful(SERVICE, respond=_answer)


class Upstream:
    """The fake vendor in its own process on a fixed loopback port; stop and start at will."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "uvicorn", "tests.load.conftest:upstream_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
            "--no-access-log", "--lifespan", "off",
        ]  # fmt: skip
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=_child_env()
            )
        _wait_for(self.url + "/ping", self.process, self.log, accept=(200, 401))

    def stop(self) -> None:
        """Kill it outright: the vendor is simply gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


# -- the gateway -------------------------------------------------------------------------------


def _child_env(**extra: str) -> dict[str, str]:
    """The environment without any ``AGENTGUARD_*`` setting of the outer run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGUARD_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _wait_for(
    url: str, process: subprocess.Popen[bytes], log: Path, *, accept: tuple[int, ...] = (200,)
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: process exited {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code in accept:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"{url} did not answer within 30 s")


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` (KiB), ``Threads``, open file descriptors (``fds``) and CPU time (``cpu_ms``)."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            figures[name] = int(value.split()[0])
    figures["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    figures["cpu_ms"] = ticks * 1000 // os.sysconf("SC_CLK_TCK")
    return figures


@dataclass
class Deployment:
    """A configured gateway: settings file, store, one proxied service, keys per user."""

    root: Path
    store_url: str
    upstream: Upstream
    kek: str
    port: int = field(default_factory=free_port)
    keys: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.root / "agentguard.toml"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cli(self, *argv: str, stdin: str | None = None) -> str:
        """Run one operator command in-process; its stdout, or a test failure."""
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(argv))
                except SystemExit as exit_:
                    code = int(exit_.code or 0)
        finally:
            sys.stdin = saved
        assert code == 0, f"agentguard {argv[0]} {argv[1]}: {code}: {err.getvalue()}"
        return out.getvalue()

    def write_settings(self, *, read_timeout: float, access_log: bool) -> None:
        self.config.write_text(f"""
public_origin = "{self.origin}"
[store]
url = "{self.store_url}"
[server]
host = "127.0.0.1"
port = {self.port}
graceful_timeout = 10
[logging]
level = "warning"
format = "json"
access_log = {str(access_log).lower()}
[audit]
instance = "gw-load"
[[services]]
name = "{SERVICE}"
base_url = "{self.upstream.url}/v2"
allow_insecure_http = true
max_connections = 64
[services.timeouts]
connect = 2
read = {read_timeout}
""")

    def provision(self, users: int, *, bearer: bool = True) -> None:
        """``users`` users of one account, each with the vendor key and fresh keys."""
        config = ("--config", str(self.config))
        self.cli("accounts", "add", "acme", *config)
        self.cli("workspaces", "add", WORKSPACE, "--account", "acme", *config)
        for n in range(users):
            user = f"agent{n}"
            self.cli(
                "users", "add", user, "--account", "acme", "--workspace", WORKSPACE,
                "--grants", f"{SERVICE}:write", *config,
            )  # fmt: skip
            self.cli("credentials", "set", SERVICE, "--user", user, *config, stdin=UPSTREAM_KEY)
            out = self.root / "agents" / f"{user}.json"
            self.cli(
                "keys", "issue", "--store", self.store_url, "--user", user,
                "--workspace", WORKSPACE, "--out", str(out),
                "--token-url", f"{self.origin}/oauth/token", "--resource-url", self.origin,
                *(("--bearer",) if bearer else ()),
            )  # fmt: skip
            self.keys.append(json.loads(out.read_text())["access_key"])

    def credentials_file(self, n: int) -> Path:
        return self.root / "agents" / f"agent{n}.json"

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentguard.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--no-operator",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=_child_env(AGENTGUARD_KEK=self.kek),
                cwd=self.root,
            )
        _wait_for(self.origin + "/readyz", self.process, self.log)

    def stop(self) -> int | None:
        """SIGTERM, let it drain and flush; its exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail("the gateway did not stop within 30 s of SIGTERM")
        return process.returncode

    def entries(self) -> list[AuditEntry]:
        """The whole audit log, read from the store once the gateway has stopped."""

        async def read() -> list[AuditEntry]:
            store = open_store(self.store_url)
            try:
                entries: list[AuditEntry] = await store.read()
                return entries
            finally:
                await store.close()

        return anyio.run(read)

    def audited_allows(self) -> int:
        """``guard.decision`` allow events in a log that must verify as one linear chain."""
        entries = self.entries()
        report = verify_log(entries)
        assert report.ok, report.first.line() if report.first else report
        assert [e.seq for e in entries] == list(range(len(entries)))
        return sum(
            1
            for e in entries
            if e.event().get("action") == "guard.decision" and e.event().get("decision") == "allow"
        )


def new_kek() -> str:
    return "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    vendor = Upstream(tmp_path / "upstream.log")
    vendor.start()
    try:
        yield vendor
    finally:
        vendor.stop()


@contextlib.contextmanager
def deployment(
    root: Path,
    store_url: str,
    upstream: Upstream,
    *,
    users: int = 4,
    read_timeout: float = 30,
    access_log: bool = True,
    bearer: bool = True,
    start: bool = True,
) -> Iterator[Deployment]:
    """A provisioned gateway, started unless ``start=False``; killed if still running after."""
    kek = new_kek()
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("AGENTGUARD_"):
                patch.delenv(name)
        patch.setenv("AGENTGUARD_KEK", kek)
        patch.chdir(root)
        gateway = Deployment(root, store_url, upstream, kek)
        gateway.write_settings(read_timeout=read_timeout, access_log=access_log)
        gateway.provision(users, bearer=bearer)
    if start:
        gateway.start()
    try:
        yield gateway
    finally:
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait()


def sqlite_url(root: Path) -> str:
    return f"sqlite:///{root / 'agentguard.db'}"


# -- the load driver ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What the agents saw: statuses, latencies, transport errors, a body per non-200 status."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    samples: dict[int, dict[str, object]] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    def server_errors(self) -> dict[int, int]:
        return {status: n for status, n in self.statuses.items() if status >= 500}

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def figures(self) -> dict[str, float | int]:
        return {
            "requests": self.completed,
            "seconds": round(self.elapsed, 2),
            "requests_per_second": round(self.completed / self.elapsed, 1),
            "p50_ms": round(self.percentile(0.50) * 1000, 2),
            "p99_ms": round(self.percentile(0.99) * 1000, 2),
            "max_ms": round(max(self.latencies, default=0.0) * 1000, 2),
        }


async def drive(
    origin: str,
    keys: list[str],
    *,
    agents: int,
    seconds: float,
    max_requests: int,
    path: str = f"/{SERVICE}/contacts",
    request_timeout: float = 30,
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> LoadResult:
    """``agents`` concurrent agents (one connection each) calling ``path`` in a loop.

    Bounded by ``seconds`` and by ``max_requests`` overall; ``during`` runs alongside (a fault).
    """
    result = LoadResult()
    started = time.monotonic()
    deadline = started + seconds

    async def agent(n: int) -> None:
        headers = {"Authorization": f"Bearer {keys[n % len(keys)]}"}
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=origin,
            headers=headers,
            timeout=request_timeout,
            limits=limits,
            trust_env=False,
        ) as client:
            while time.monotonic() < deadline and result.sent < max_requests:
                result.sent += 1
                begun = time.perf_counter()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as error:
                    result.errors[type(error).__name__] += 1
                    continue
                result.latencies.append(time.perf_counter() - begun)
                result.statuses[response.status_code] += 1
                result.timeline.append((time.monotonic() - started, response.status_code))
                if response.status_code != 200 and response.status_code not in result.samples:
                    try:
                        result.samples[response.status_code] = response.json()
                    except ValueError:
                        result.samples[response.status_code] = {"text": response.text[:200]}

    async with anyio.create_task_group() as tasks:
        for n in range(agents):
            tasks.start_soon(agent, n)
        if during is not None:
            tasks.start_soon(during)
    result.elapsed = time.monotonic() - started
    return result


def settle(pid: int, baseline: dict[str, int], *, fds: int, threads: int) -> dict[str, int]:
    """Wait (up to 10 s) for fds and threads to come back within bounds; the last reading."""
    deadline = time.monotonic() + 10
    while True:
        now = proc_status(pid)
        within = now["fds"] <= baseline["fds"] + fds
        within = within and now["Threads"] <= baseline["Threads"] + threads
        if within or time.monotonic() > deadline:
            return now
        time.sleep(0.2)
