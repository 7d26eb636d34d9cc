"""The ``agentguard serve`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentguard.cli.common_args import CONFIG_HELP

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
        "the store. Logs go to stderr, one JSON object per line.",
    )
    serve.add_argument("--config", type=Path, help=CONFIG_HELP)
    serve.add_argument(
        "--store", help="store URL, overriding $AGENTGUARD_STORE and the settings' store.url"
    )
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--check",
        action="store_true",
        help="validate the settings and secrets, build the gateway, and exit without serving",
    )
