"""The MCP conformance suite and the MCP Inspector CLI, from the npm registry, for tests.

``@modelcontextprotocol/conformance`` plays an MCP client against a server and reports each
check; the Inspector CLI (v2, ``--cli``) is the reference client people debug servers with. Both
need Node 22 or newer, which the machine's Node (20) is not, so Node itself comes from the
registry too (the ``node-<os>-<arch>`` package carries the official binary). Everything is
installed once per machine with ``npm install --prefix`` into a directory keyed by the pinned
versions, and run with that Node: nothing needs a global install.

``AGENTGUARD_MCP_TOOLS`` names the directory (default: under the temp dir). Without ``npm`` or
the registry the tests skip, which ``AGENTGUARD_REQUIRE_SERVICES=1`` (CI) turns into a failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "CONFORMANCE",
    "INSPECTOR",
    "NODE_VERSION",
    "conformance_command",
    "inspector_command",
    "node_binary",
    "node_env",
    "run",
    "tools_prefix",
]

NODE_VERSION = "22.23.5"  # the newest 22.x on the registry; the Inspector needs >= 22.19
CONFORMANCE = "@modelcontextprotocol/conformance@0.1.16"
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


def _unavailable(reason: str) -> Any:
    message = f"the MCP conformance tools are unavailable: {reason}"
    if os.environ.get("AGENTGUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (AGENTGUARD_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(message)


def _node_package() -> str | None:
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    arch = _ARCH.get(platform.machine().lower())
    if system is None or arch is None:
        return None
    return f"node-{system}-{arch}@{NODE_VERSION}"


def tools_prefix() -> Path:
    """The npm prefix holding Node, the suite and the Inspector (installed on first use)."""
    node = _node_package()
    if node is None:
        return Path(_unavailable(f"no Node package for {sys.platform}/{platform.machine()}"))
    packages = (node, CONFORMANCE, INSPECTOR)
    digest = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    default = Path(tempfile.gettempdir()) / f"agentguard-mcp-tools-{digest}"
    prefix = Path(os.environ.get("AGENTGUARD_MCP_TOOLS", str(default)))
    ready = prefix / ".ready"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(str(prefix) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            npm = shutil.which("npm")
            if npm is None:
                return Path(_unavailable("npm is not installed"))
            shutil.rmtree(prefix, ignore_errors=True)
            prefix.mkdir(parents=True)
            # --ignore-scripts: none of the three needs an install script (the Inspector's
            # postinstall only sets up a source checkout), and none of them should run one.
            step = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
            step += ["--ignore-scripts", "--no-update-notifier", "--loglevel=error", *packages]
            try:
                done = subprocess.run(
                    step, check=False, capture_output=True, text=True, timeout=900
                )
            except subprocess.TimeoutExpired:
                return Path(_unavailable("npm install took longer than 15 minutes"))
            if done.returncode != 0:
                return Path(_unavailable(f"npm install {' '.join(packages)}: {done.stderr[-600:]}"))
            ready.write_text(" ".join(packages) + "\n")
    return prefix


def node_binary() -> str:
    """The registry's Node binary (22.x)."""
    return str(tools_prefix() / "node_modules" / ".bin" / "node")


def conformance_command(*args: str) -> list[str]:
    """``conformance ARGS`` run with the registry's Node."""
    script = tools_prefix() / "node_modules/@modelcontextprotocol/conformance/dist/index.js"
    return [node_binary(), str(script), *args]


def inspector_command(*args: str) -> list[str]:
    """``mcp-inspector --cli ARGS`` run with the registry's Node."""
    script = tools_prefix() / "node_modules/@modelcontextprotocol/inspector/clients/launcher"
    return [node_binary(), str(script / "build/index.js"), "--cli", *args]


def node_env(
    home: Path, *, preload: Path | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment for the Node tools: their own ``HOME`` (the Inspector keeps a catalog and
    OAuth state there), no inherited ``NODE_OPTIONS``, and ``preload`` required in every Node
    process they start. ``extra`` values (a key, say) are passed, never printed."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env |= {
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "catalog.json"),
        "NO_COLOR": "1",
        "CI": "true",
    }
    if preload is not None:
        env["NODE_OPTIONS"] = f'--require "{preload}"'
    env |= dict(extra or {})
    return env


def run(
    command: Sequence[str], env: Mapping[str, str], *, cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a Node tool; its exit status is the caller's to judge."""
    return subprocess.run(
        list(command),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


if __name__ == "__main__":  # python -m tests.support.mcp_conformance: install, print the prefix
    print(tools_prefix())
    sys.exit(0)
