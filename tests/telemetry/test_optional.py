"""Telemetry is optional: without OpenTelemetry installed the guard works, and a guard without
telemetry never imports it (checked in fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_EXERCISE = textwrap.dedent(
    """
    import sys
    import anyio, httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from agentguard import Guard, RouteRule
    from agentguard.asgi import AgentGuardMiddleware
    from agentguard.storage import MemoryStore
    from agentguard.testing import make_user
    import agentguard.telemetry  # the package itself imports no OpenTelemetry

    async def ok(request):
        return PlainTextResponse("ok")

    async def main():
        store = MemoryStore()
        guard = Guard(store, rules=[RouteRule("/crm", "crm")])
        await make_user(store, user_id="alice", grants="crm:read")
        key = (await guard.issuer.issue("alice", "ws-1")).access_key.reveal()
        app = AgentGuardMiddleware(Starlette(routes=[Route("/crm/a", ok)]), guard)
        transport = httpx.ASGITransport(app)
        auth = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = [
                (await client.get("/crm/a", headers=auth)).status_code,
                (await client.post("/crm/a", headers=auth)).status_code,
                (await client.get("/crm/a")).status_code,
            ]
        assert statuses == [200, 403, 401], statuses
        return len(await store.read(0))

    events = anyio.run(main)
    assert events == 3, events
    roots = ("opentelemetry", "prometheus_client")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in roots)
    print("LOADED", loaded)
    """
)

_BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("opentelemetry", "prometheus_client"):
                raise ImportError(f"{name} is blocked (not installed)")
            return None

    sys.meta_path.insert(0, Blocked())
    """
)

_TELEMETRY_NEEDS_THE_EXTRA = textwrap.dedent(
    """
    from agentguard.errors import ConfigurationError
    from agentguard.telemetry import Telemetry
    try:
        Telemetry()
    except ConfigurationError as error:
        assert "agentguard[otel]" in str(error), error
        print("REFUSED")
    """
)


def _run(source: str) -> str:
    finished = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def test_a_guard_without_telemetry_imports_no_opentelemetry() -> None:
    assert "LOADED []" in _run(_EXERCISE)


def test_the_guard_works_with_opentelemetry_not_installed() -> None:
    output = _run(_BLOCK + _EXERCISE + _TELEMETRY_NEEDS_THE_EXTRA)
    assert "LOADED []" in output and "REFUSED" in output
