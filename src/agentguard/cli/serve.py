"""``agentguard serve``: run the gateway with uvicorn until SIGTERM, then drain.

Exit codes: 0 for a successful ``--check`` or a shutdown uvicorn was asked for in-process; after
SIGTERM or SIGINT the gateway drains and then, like uvicorn, re-raises the signal, so the process
ends as terminated by it (status 143 for SIGTERM in a shell). 2 for settings, secrets or an
environment that prevents starting (no uvicorn, a port in use, a store that cannot open).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agentguard.cli.operator import one_line
from agentguard.config import Settings, load_settings
from agentguard.errors import ConfigurationError
from agentguard.gateway import build_gateway, configure_logging

__all__ = ["run"]


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config or os.environ.get("AGENTGUARD_CONFIG")
    if path is None and Path("agentguard.toml").is_file():
        path = "agentguard.toml"
    if path is None:
        raise ConfigurationError("no settings file: pass --config (agentguard init writes one)")
    settings = load_settings(path)
    server = settings.server.model_copy(
        update={
            key: value
            for key, value in (("host", args.host), ("port", args.port))
            if value is not None
        }
    )
    return settings.model_copy(update={"server": server})


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    gateway = build_gateway(settings)
    if args.check:
        names = ", ".join(sorted(gateway.proxies)) or "none"
        print(f"settings OK; services: {names}")
        return 0
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "agentguard serve needs uvicorn: pip install 'agentguard[server]'"
        ) from None
    configure_logging(settings.logging.level, settings.logging.format)
    config = uvicorn.Config(
        gateway.app,
        host=settings.server.host,
        port=settings.server.port,
        lifespan="on",
        log_config=None,
        access_log=False,  # ours omits query strings, which may carry vendor keys
        server_header=False,
        proxy_headers=settings.server.proxy_headers,
        forwarded_allow_ips=settings.server.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.server.graceful_timeout),
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 2


def run(args: argparse.Namespace) -> int:
    """Run ``serve``."""
    try:
        return _serve(args)
    except (ConfigurationError, OSError, ValueError) as error:
        print(f"agentguard serve: {one_line(error)}", file=sys.stderr)
        return 2
