"""Many concurrent agents against ``agentguard serve`` for ``AGENTGUARD_LOAD_SECONDS`` seconds.

Skipped unless ``AGENTGUARD_LOAD_SECONDS`` is set (CI: ``AGENTGUARD_LOAD_SECONDS=60 nox -s tests
-- tests/load/test_load.py -s``). Promises: zero 5xx, zero lost audit events (every 200 is one
``allow`` decision in a log that verifies as one linear chain), and a stable memory footprint.
The figures are printed (``pytest -s``) and written to ``load-<store>.json`` under the test's
``tmp_path``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.backends.services import drop_schema, postgres_dsn, random_name
from tests.load.conftest import (
    Deployment,
    LoadResult,
    Upstream,
    deployment,
    drive,
    proc_status,
    sqlite_url,
)

SECONDS = os.environ.get("AGENTGUARD_LOAD_SECONDS", "")
AGENTS = 32
USERS = 8
MAX_REQUESTS = 2_000_000  # a bound on the count as well as on the time
RSS_GROWTH_LIMIT_KIB = 150 * 1024

pytestmark = [
    pytest.mark.skipif(
        not SECONDS, reason="set AGENTGUARD_LOAD_SECONDS (e.g. 60) to run the load test"
    ),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    dsn = anyio.run(postgres_dsn)
    schema = random_name("agentguard_load")
    try:
        yield f"{dsn}?schema={schema}"
    finally:
        anyio.run(drop_schema, dsn, schema)


def _drive(gateway: Deployment, *, seconds: float, max_requests: int) -> LoadResult:
    async def run() -> LoadResult:
        return await drive(
            gateway.origin, gateway.keys, agents=AGENTS, seconds=seconds, max_requests=max_requests
        )

    return anyio.run(run)


def test_gateway_under_load(tmp_path: Path, store_url: str, upstream: Upstream) -> None:
    seconds = float(SECONDS or "60")
    kind = store_url.split(":", 1)[0]
    with deployment(tmp_path, store_url, upstream, users=USERS) as gateway:
        # warm up (imports, pools, caches) so the start figure is the steady state's
        warm = _drive(gateway, seconds=2, max_requests=5_000)
        start = proc_status(gateway.pid)
        result = _drive(gateway, seconds=seconds, max_requests=MAX_REQUESTS)
        end = proc_status(gateway.pid)
        exit_code = gateway.stop()
    allows = gateway.audited_allows()

    figures = {
        "store": kind,
        "agents": AGENTS,
        "users": USERS,
        **result.figures(),
        "rss_start_mib": round(start["VmRSS"] / 1024, 1),
        "rss_end_mib": round(end["VmRSS"] / 1024, 1),
        "threads_start": start["Threads"],
        "threads_end": end["Threads"],
        "fds_start": start["fds"],
        "fds_end": end["fds"],
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "transport_errors": dict(result.errors),
        "gateway_cpu_ms_per_request": round(
            (end["cpu_ms"] - start["cpu_ms"]) / result.completed, 2
        ),
        "cpus": os.cpu_count(),
        "audited_allows": allows,
        "exit_code": exit_code,
    }
    report = tmp_path / f"load-{kind}.json"
    report.write_text(json.dumps(figures, indent=2))
    print(f"\nload ({kind}): {json.dumps(figures)}\nfigures written to {report}")

    assert result.elapsed >= seconds * 0.95
    assert not result.errors, result.errors
    assert not result.server_errors(), (result.server_errors(), result.samples)
    assert result.statuses == {200: result.sent}, result.samples
    assert allows == warm.statuses[200] + result.statuses[200], "audit events were lost"
    assert end["VmRSS"] < start["VmRSS"] + RSS_GROWTH_LIMIT_KIB
