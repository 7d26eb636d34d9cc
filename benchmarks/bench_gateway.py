"""The real ``agentguard serve`` against a plain Python proxy, end to end, in one run.

A fast fixed-response upstream (nginx when installed, else ``fixed_upstream.py``) answers every
proxy; in front of it, measured in the same run with rounds interleaved:

- a minimal aiohttp pass-through (``passthrough_aiohttp.py``): the baseline of every ratio;
- nginx as a reverse proxy with a keep-alive upstream pool (when nginx is installed);
- the gateway's own stack with nothing of agentguard's on it (``passthrough_stack.py``: uvicorn,
  a bare ASGI app, httpx on ``AiohttpTransport``): the floor ``serve`` stands on;
- ``agentguard serve`` with its default SQLite store and Bearer keys, 32 agents (one key each),
  provisioned through the operator CLI; optionally (``--dpop``) the same with DPoP-bound keys
  and one pre-generated proof per request;
- with ``--postgres URL``, ``agentguard serve`` on PostgreSQL (a fresh schema in that database,
  dropped afterwards), Bearer keys. The database server is not pinned and its CPU is not counted
  in the gateway's CPU per request: it shares both cores with everything else.

The load generator (wrk, else ``loadgen.py``) runs in its own process. On a machine with two or
more cores, it and the upstream are pinned to core 0 and the system under test to core 1
(``taskset``), so the figures are the proxy's and not a fight for one core. For each system it
prints req/s, p50/p99, the CPU time per request of the system under test (``utime + stime`` of
its processes from ``/proc/<pid>/stat``, so it stays meaningful on a loaded machine) and the
ratios against the aiohttp pass-through. ``--check`` exits 1 when a target of issue 17 is missed.

    python benchmarks/bench_gateway.py [--quick] [--rounds 3] [--seconds 8] [--dpop] [--check]
        [--workers N] [--postgres postgresql://127.0.0.1/test]

``--floors`` adds the same bare pass-through on other stacks: aiohttp's client session straight
(no httpx models) under uvicorn, and, when granian is installed, granian serving it over httpx
and over aiohttp's client: where the gateway's floor would be on each.

``--workers N`` adds ``agentguard serve --workers N`` on its own store, not pinned (its
processes share both cores with the load generator and the upstream): what several processes
buy on this machine, beside the one-core figures the targets are set on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gateway_setup import Deployment, Processes, free_port, pg_schema, wait_http
from report import Row, record

HERE = Path(__file__).resolve().parent
PATH = "/crm/contacts"
CONNECTIONS = 32
# Targets of issue 17, as bounds on the ratio to the aiohttp pass-through: (at least, at most).
TARGETS = {
    "serve SQLite, Bearer: req/s": (0.5, None),
    "serve SQLite, Bearer: p99": (None, 2.0),
    "serve SQLite, DPoP: req/s": (0.5, None),
    "serve PostgreSQL, Bearer: req/s": (0.3, None),
}
WRK_SCRIPT = """
local path = os.getenv("BENCH_PATH")
local built = {}
local n = 0
init = function(args)
  local file = os.getenv("BENCH_HEADERS")
  if file and file ~= "" then
    for line in io.lines(file) do
      local headers = {}
      for pair in string.gmatch(line, "[^\\t]+") do
        local name, value = string.match(pair, "^([^:]+): (.*)$")
        headers[name] = value
      end
      built[#built + 1] = wrk.format("GET", path, headers)
    end
  end
  if #built == 0 then built[1] = wrk.format("GET", path) end
end
request = function()
  n = n + 1
  return built[((n - 1) % #built) + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "io_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class System:
    """One system under test: where it listens, its process, and the headers its agents send."""

    label: str
    port: int
    pid: int
    headers: Path | None = None
    per_request: bool = False  # each header line is used once (DPoP proofs)
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # per request, of the system under test


def cpu_ticks(pid: int) -> int:
    """``utime + stime`` of ``pid`` and all its descendants, in clock ticks."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            pending.extend(int(child) for child in children)
    return total


class Bench:
    def __init__(self, root: Path, processes: Processes, *, pin: bool, tools: bool = True) -> None:
        self.root = root
        self.processes = processes
        self.pin = pin
        self.wrk = shutil.which("wrk") if tools else None
        self.nginx = shutil.which("nginx") if tools else None

    def core(self, which: str) -> list[str]:
        return ["taskset", "-c", which] if self.pin else []

    def start_nginx(self, name: str, server: str, core: str) -> int:
        """nginx, one worker, serving ``server`` (a ``server {}`` block); the master's pid."""
        prefix = self.root / name
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(
            f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; keepalive_requests 1000000; {server} }}\n"
        )
        process = self.processes.start(
            [*self.core(core), self.nginx or "nginx", "-p", str(prefix), "-e",
             f"{prefix}/error.log", "-c", "nginx.conf", "-g", "daemon off;"],
            prefix / "stdout.log",
        )  # fmt: skip
        return process.pid

    def upstream(self) -> str:
        port = free_port()
        if self.nginx:
            body = '{"contacts": ["Ada", "Grace", "Hedy"], "total": 3}'
            server = (
                f"server {{ listen 127.0.0.1:{port}; location / {{ "
                f"default_type application/json; return 200 '{body}'; }} }}"
            )
            self.start_nginx("upstream", server, "0")
        else:
            script = [sys.executable, str(HERE / "fixed_upstream.py"), str(port)]
            self.processes.start([*self.core("0"), *script], self.root / "upstream.log")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/ping", 30)
        return url

    def nginx_proxy(self, upstream: str) -> System:
        port = free_port()
        server = (
            f"upstream up {{ server {upstream.removeprefix('http://')}; keepalive 64; }} "
            f"server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; "
            'proxy_http_version 1.1; proxy_set_header Connection ""; } }'
        )
        pid = self.start_nginx("proxy", server, "1")
        wait_http(f"http://127.0.0.1:{port}{PATH}", 30)
        return System("nginx reverse proxy", port, pid)

    def aiohttp_proxy(self, upstream: str) -> System:
        port = free_port()
        script = [sys.executable, str(HERE / "passthrough_aiohttp.py"), str(port), upstream]
        process = self.processes.start([*self.core("1"), *script], self.root / "aiohttp.log")
        wait_http(f"http://127.0.0.1:{port}{PATH}", 30)
        return System("aiohttp pass-through", port, process.pid)

    def stack_proxy(self, upstream: str, server: str = "uvicorn", client: str = "httpx") -> System:
        port = free_port()
        script = [sys.executable, str(HERE / "passthrough_stack.py"), str(port), upstream,
                  "--server", server, "--client", client]  # fmt: skip
        log = self.root / f"stack-{server}-{client}.log"
        process = self.processes.start([*self.core("1"), *script], log)
        wait_http(f"http://127.0.0.1:{port}{PATH}", 30)
        return System(f"{server}+{client}, no guard", port, process.pid)

    def other_floors(self, upstream: str) -> list[System]:
        """The bare pass-through on the other stacks the gateway could stand on."""
        systems = [self.stack_proxy(upstream, client="aiohttp")]
        if importlib.util.find_spec("granian") is None:
            print("granian is not installed: its floors are left out", file=sys.stderr)
            return systems
        systems.append(self.stack_proxy(upstream, server="granian"))
        systems.append(self.stack_proxy(upstream, server="granian", client="aiohttp"))
        return systems

    def load(self, system: System, seconds: float, headers: Path | None) -> Sample:
        """One round of load on ``system``; fails on any non-2xx answer or I/O error."""
        if self.wrk:
            script = self.root / "load.lua"
            script.write_text(WRK_SCRIPT)
            duration = f"-d{max(1, round(seconds))}s"
            argv = [self.wrk, "-t1", f"-c{CONNECTIONS}", duration, "--timeout", "10s",
                    "-s", str(script), f"http://127.0.0.1:{system.port}"]  # fmt: skip
        else:
            argv = [sys.executable, str(HERE / "loadgen.py"), "127.0.0.1", str(system.port),
                    PATH, str(CONNECTIONS), str(seconds), str(headers or "")]  # fmt: skip
        environment = {**os.environ, "BENCH_PATH": PATH, "BENCH_HEADERS": str(headers or "")}
        before = cpu_ticks(system.pid)
        finished = subprocess.run(  # noqa: S603 - our own tools
            [*self.core("0"), *argv], env=environment, capture_output=True, text=True, check=False
        )
        if finished.returncode:
            raise SystemExit(f"{argv[0]} failed: {finished.stderr or finished.stdout}")
        used = cpu_ticks(system.pid) - before
        figures = json.loads(finished.stdout.strip().splitlines()[-1])
        if figures["status_errors"] or figures["io_errors"] or not figures["requests"]:
            raise SystemExit(f"{system.label}: errors under load: {figures}")
        requests = int(figures["requests"])
        return Sample(
            rate=requests / (figures["duration_us"] / 1e6),
            p50_ms=figures["p50_us"] / 1000,
            p99_ms=figures["p99_us"] / 1000,
            cpu_ms=used * 1000 / os.sysconf("SC_CLK_TCK") / requests,
        )


def summary(system: System) -> Sample:
    """The median of each figure over the rounds."""
    samples = system.samples
    return Sample(
        statistics.median(s.rate for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        statistics.median(s.cpu_ms for s in samples),
    )


def run(
    rounds: int,
    seconds: float,
    agents: int,
    dpop: bool,
    *,
    nginx: bool,
    profile: Path | None,
    tools: bool = True,
    workers: int = 1,
    postgres: str | None = None,
    floors: bool = False,
) -> list[System]:
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    load1, _, _ = os.getloadavg()
    print(f"load average {load1:.1f} on {os.cpu_count()} cores; pinned: {pin}", file=sys.stderr)
    with contextlib.ExitStack() as stack:  # unwinds processes, then the schema, then files
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        schema = stack.enter_context(pg_schema(postgres)) if postgres is not None else None
        processes = stack.enter_context(Processes())
        bench = Bench(root, processes, pin=pin, tools=tools)
        upstream = bench.upstream()
        systems = [bench.aiohttp_proxy(upstream)]
        if bench.nginx and nginx:
            systems.append(bench.nginx_proxy(upstream))
        systems.append(bench.stack_proxy(upstream))
        systems += bench.other_floors(upstream) if floors else []
        gateway = Deployment(root / "gateway", upstream, agents=agents, dpop=dpop)
        gateway.provision()
        process = gateway.start(processes, bench.core("1"))
        bearer = System("serve SQLite, Bearer", gateway.port, process.pid, gateway.bearer_headers())
        systems.append(bearer)
        if workers > 1:  # the gateway's own processes, unpinned: they share both cores
            several = Deployment(root / "workers", upstream, agents=agents, dpop=False)
            several.provision()
            started = several.start(processes, [], workers=workers)
            label = f"serve SQLite, Bearer, {workers} workers (unpinned)"
            systems.append(System(label, several.port, started.pid, several.bearer_headers()))
        if schema is not None:
            on_pg = Deployment(root / "pg", upstream, agents=agents, dpop=False, store=schema)
            on_pg.provision()
            started = on_pg.start(processes, bench.core("1"))
            label = "serve PostgreSQL, Bearer"
            systems.append(System(label, on_pg.port, started.pid, on_pg.bearer_headers()))
        dpop_system = None
        if dpop:
            dpop_system = System("serve SQLite, DPoP", gateway.port, process.pid, per_request=True)
            systems.append(dpop_system)
        for system in systems:  # warm up: pools, caches, the first connections
            if system.per_request:
                system.headers = gateway.dpop_headers(PATH, 2000)
            bench.load(system, min(2.0, seconds), system.headers)
        spy = None
        if profile is not None:  # py-spy on the gateway during the measured rounds
            spy = processes.start(
                ["py-spy", "record", "-p", str(process.pid), "-o", str(profile), "-f", "raw",
                 "-r", "250", "--gil", "--nonblocking"], root / "py-spy.log",
            )  # fmt: skip
        for number in range(rounds):
            order = systems[number % len(systems) :] + systems[: number % len(systems)]
            for system in order:
                if system.per_request:  # enough fresh proofs for this round, each used once
                    expected = max(s.rate for s in bearer.samples or [Sample(2000, 0, 0, 0)])
                    system.headers = gateway.dpop_headers(PATH, int(expected * seconds * 2) + 500)
                system.samples.append(bench.load(system, seconds, system.headers))
                print(f"round {number + 1}: {system.label}: {system.samples[-1]}", file=sys.stderr)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    return systems


def show(systems: list[System], check: bool) -> None:
    baseline = summary(systems[0])
    print(f"{CONNECTIONS} connections; median of {len(systems[0].samples)} interleaved rounds")
    width = max(26, *(len(system.label) + 2 for system in systems))
    print(
        f"{'system':<{width}}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}"
        f"{'req/s ratio':>13}{'p99 ratio':>11}{'CPU ratio':>11}"
    )
    rows: list[Row] = []
    missed = []
    name = systems[0].label
    for system in systems:
        s = summary(system)
        print(
            f"{system.label:<{width}}{s.rate:>9,.0f}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}{s.cpu_ms:>12.3f}"
            f"{s.rate / baseline.rate:>12.2f}x{s.p99_ms / baseline.p99_ms:>10.2f}x"
            f"{s.cpu_ms / baseline.cpu_ms:>10.2f}x"
        )
        rows += [
            Row("gateway", f"{system.label}: req/s", s.rate, "req/s", name, baseline.rate, False),
            Row("gateway", f"{system.label}: p99", s.p99_ms, "ms", name, baseline.p99_ms, True),
            Row(
                "gateway", f"{system.label}: CPU per request", s.cpu_ms * 1000, "µs", name,
                baseline.cpu_ms * 1000, True,
            ),
        ]  # fmt: skip
    record(rows)
    for row in rows:
        low, high = TARGETS.get(row.name, (None, None))
        if (low is not None and row.ratio < low) or (high is not None and row.ratio > high):
            missed.append(f"{row.name}: {row.ratio:.2f}x (target {low or high})")
    for miss in missed:
        print(f"MISS {miss}", file=sys.stderr)
    if check and missed:
        raise SystemExit(1)


def main() -> None:
    if importlib.util.find_spec("aiohttp") is None:  # the baseline is an aiohttp proxy
        print("bench_gateway.py needs aiohttp: pip install -r benchmarks/requirements.txt; "
              "skipped", file=sys.stderr)  # fmt: skip
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 s, 8 agents")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--agents", type=int, default=32, help="agents, one key each")
    parser.add_argument("--dpop", action="store_true", help="add DPoP-bound keys, fresh proofs")
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx as a proxy out")
    parser.add_argument(
        "--python-tools",
        action="store_true",
        help="use loadgen.py and fixed_upstream.py even when wrk and nginx are installed",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="also measure serve --workers N (unpinned)"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also measure serve on PostgreSQL, in a fresh schema of this database",
    )
    parser.add_argument(
        "--floors",
        action="store_true",
        help="also the bare pass-through on aiohttp's client, and on granian when installed",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the gateway (raw format) to here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.seconds, arguments.agents = 3.0, 8
    systems = run(
        arguments.rounds,
        arguments.seconds,
        arguments.agents,
        arguments.dpop,
        nginx=not arguments.no_nginx,
        profile=arguments.profile,
        tools=not arguments.python_tools,
        workers=arguments.workers,
        postgres=arguments.postgres,
        floors=arguments.floors,
    )
    show(systems, arguments.check)


if __name__ == "__main__":
    main()
