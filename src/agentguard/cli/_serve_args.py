"""The ``agentguard serve`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentguard.cli._common_args import CONFIG_HELP

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``serve`` on the main parser's subparsers."""
    serve = commands.add_parser(
        "serve",
        help="run the gateway: OAuth endpoints and one proxy per configured service",
        description="Runs the standalone gateway with uvicorn (pip install 'agentguard[server]'; "
        "from a checkout: pip install -e '.[server]'). "
        "On SIGTERM or Ctrl-C it stops accepting connections, lets in-flight requests finish "
        "for up to server.graceful_timeout seconds, then flushes the audit writer and closes "
        "the store. Logs go to stderr, one JSON object per line. Before listening it opens "
        "the store (creating or migrating it, as the gateway does); a store it cannot open "
        "is one line on stderr naming it (never its password), exit code 2.",
    )
    serve.add_argument("--config", type=Path, help=CONFIG_HELP)
    serve.add_argument(
        "--store", help="store URL, overriding $AGENTGUARD_STORE and the settings' store.url"
    )
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--operator-port",
        type=int,
        metavar="PORT",
        help="operator listener port (overrides operator.port, default 8081; it listens on "
        "operator.host, 127.0.0.1 by default)",
    )
    serve.add_argument(
        "--no-operator",
        action="store_true",
        help="do not start the operator listener (approvals over HTTP); the approvals and "
        "operators commands still work on the store",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N gateway processes on the same port (default 1); each builds its own "
        "gateway on the shared store (not memory://). About one per core the gateway may use; "
        "see docs/performance.md",
    )
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate the settings and secrets, check that the store opens (read-only, "
        "never created, within 5 seconds) and that the server driver (uvicorn) is installed, "
        "then exit without serving; each failure is one line, exit code 2",
    )
