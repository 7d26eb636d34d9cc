"""Serving the conformance server on loopback and reading what the suite and the guard recorded."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from agentguard import Guard, IssuedKeys
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.dpop import DPoPKey, DPoPPolicy
from agentguard.storage import MemoryStore
from agentguard.testing import make_user
from tests.mcp_conformance.server import SCOPES, ConformanceState, guarded_app, plain_app
from tests.support import mcp_conformance as tools
from tests.support.servers import LoopbackServer

__all__ = ["CALLED_TOOLS", "PRELOAD", "Served", "Suite", "audit_events", "run_suite", "serve"]

PRELOAD = Path(__file__).with_name("preload.cjs")
USER = "conformance"
Mode = Literal["plain", "bearer", "dpop"]
#: The suite's tools that a scenario calls (json_schema_2020_12_tool is only listed).
CALLED_TOOLS = {
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_error_handling",
    "test_tool_with_progress",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "test_reconnection",
}
_RESULT_DIR = re.compile(r"server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[0-9-]+Z")


@dataclass
class Served:
    """A running conformance server: its MCP URL, and for a guarded one the guard and key."""

    mode: Mode
    url: str
    origin: str
    store: MemoryStore
    guard: Guard | None
    keys: IssuedKeys | None
    dpop_key: DPoPKey | None

    def client_env(self, *, with_key: bool = True) -> dict[str, str]:
        """What the preload needs to present this server's key (nothing without ``with_key``)."""
        if not with_key or self.keys is None:
            return {}
        env = {"AGENTGUARD_MCP_ORIGIN": self.origin, "AGENTGUARD_MCP_KEY": self.access_key}
        if self.dpop_key is not None:
            env["AGENTGUARD_MCP_DPOP_PEM"] = self.dpop_key.to_pem().decode("ascii")
        return env

    @property
    def access_key(self) -> str:
        assert self.keys is not None
        return self.keys.access_key.reveal()


@contextmanager
def serve(mode: Mode) -> Iterator[Served]:
    """The conformance server on a loopback port: ``plain`` (no guard), or guarded and reached
    with a bearer key or a DPoP-bound key (then the guard demands DPoP and server nonces)."""
    store = MemoryStore()
    apps: list[ASGIApp] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await apps[0](scope, receive, send)

    server = LoopbackServer(app, lifespan="on")
    origin = server.url
    guard: Guard | None = None
    keys: IssuedKeys | None = None
    dpop_key: DPoPKey | None = None
    if mode == "plain":
        apps.append(plain_app(ConformanceState()))
    else:
        policy = None
        if mode == "dpop":
            dpop_key = DPoPKey.generate()
            policy = DPoPPolicy(
                public_origin=origin, required=True, nonce_secret=secrets.token_bytes(32)
            )
        guard = Guard(store, dpop=policy)
        keys = anyio.run(_issue, guard, store, dpop_key)
        # The resource identifier names the port, which is only known once the server has one.
        apps.append(guarded_app(guard, f"{origin}/mcp", ConformanceState()))
    with server:
        yield Served(mode, f"{origin}/mcp", origin, store, guard, keys, dpop_key)


async def _issue(guard: Guard, store: MemoryStore, dpop_key: DPoPKey | None) -> IssuedKeys:
    user = await make_user(store, user_id=USER, grants=" ".join(SCOPES))
    jkt = dpop_key.thumbprint if dpop_key is not None else None
    return await guard.issuer.issue(user.id, "ws-1", jkt=jkt)


def audit_events(store: MemoryStore) -> list[dict[str, Any]]:
    """Every audit event the guard wrote (the server flushes its writer when it stops)."""
    return [entry.event() for entry in anyio.run(store.read)]


@dataclass
class Suite:
    """One run of the conformance suite: per scenario, its checks, and everything it printed."""

    checks: dict[str, list[dict[str, Any]]]
    output: str

    def statuses(self, scenario: str) -> list[str]:
        return [check["status"] for check in self.checks[scenario]]

    def failures(self, scenario: str) -> list[str]:
        return [
            f"{check['id']}: {check.get('errorMessage', '')}"
            for check in self.checks[scenario]
            if check["status"] == "FAILURE"
        ]


def run_suite(served: Served, workdir: Path, *, with_key: bool = True) -> Suite:
    """``conformance server --suite all`` against ``served``, its checks read per scenario."""
    results = workdir / "results"
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    command = tools.conformance_command(
        "server", "--url", served.url, "--suite", "all", "-o", str(results)
    )
    env = tools.node_env(home, preload=PRELOAD, extra=served.client_env(with_key=with_key))
    done = tools.run(command, env, cwd=workdir)
    checks: dict[str, list[dict[str, Any]]] = {}
    for found in sorted(results.glob("*/checks.json")):
        match = _RESULT_DIR.fullmatch(found.parent.name)
        assert match is not None, f"unexpected result directory {found.parent.name}"
        checks[match["scenario"]] = json.loads(found.read_text())
    output = done.stdout + done.stderr
    assert checks, f"the suite wrote no results (exit {done.returncode}):\n{output[-3000:]}"
    return Suite(checks, output)
