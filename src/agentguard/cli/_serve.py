"""``agentguard serve``: run the gateway with uvicorn until SIGTERM, then drain.

Before serving (and for ``--check``, instead of serving) it checks what would stop the gateway
from starting, each failure one line on stderr naming the store without its password: the
settings and secrets, the server driver (uvicorn), and the store, opened within a few seconds
(``--check`` opens it read-only and never creates it; ``serve`` creates or migrates it, as the
gateway would).

Exit codes: 0 for a successful ``--check`` or a shutdown uvicorn was asked for in-process; after
SIGTERM or SIGINT the gateway drains and then, like uvicorn, re-raises the signal, so the process
ends as terminated by it (status 143 for SIGTERM in a shell). 2 for settings, secrets or an
environment that prevents starting (no uvicorn, a port in use, a store that cannot open).

A gateway that would start but cannot do its job says so on stderr first: no ``[[services]]``
(it proxies nothing) or no key-encryption key (credentials cannot be stored or swapped), each
with the command that fixes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from agentguard._extras import import_extra
from agentguard.cli._operator import one_line
from agentguard.cli._target import Access, check_store, config_path
from agentguard.config import NO_KEK, Settings, StoreSettings, load_settings
from agentguard.errors import ConfigurationError
from agentguard.gateway import build_gateway, configure_logging

__all__ = ["CHECK_TIMEOUT", "START_TIMEOUT", "run", "warnings"]

CHECK_TIMEOUT = 5.0  # seconds for --check to open the store read-only
START_TIMEOUT = 30.0  # seconds for serve to open (create, migrate) the store before listening


def warnings(settings: Settings, path: Path) -> list[str]:
    """What a gateway built from ``settings`` lacks to be useful, each with its fix."""
    found = []
    if not settings.services:
        found.append(
            f"no [[services]] in {path}: the gateway proxies nothing; add a [[services]] block "
            "(name, base_url; a commented example is in the file written by agentguard init, "
            "and docs/configuration.md describes it)"
        )
    if settings.secret_values.kek is None:
        found.append(f"{NO_KEK}; until then credentials cannot be stored or swapped")
    return found


def _settings(args: argparse.Namespace) -> tuple[Settings, Path]:
    path = config_path(args)
    if path is None:
        raise ConfigurationError(
            "no settings file: pass --config, set AGENTGUARD_CONFIG or run agentguard init"
        )
    settings = load_settings(path)
    if args.store:
        settings = settings.model_copy(update={"store": StoreSettings(url=args.store)})
    server = settings.server.model_copy(
        update={
            key: value
            for key, value in (("host", args.host), ("port", args.port))
            if value is not None
        }
    )
    return settings.model_copy(update={"server": server}), path


def _serve(args: argparse.Namespace) -> int:
    settings, path = _settings(args)
    uvicorn = import_extra("uvicorn")  # before anything else is built
    gateway = build_gateway(settings)
    # the gateway's own store is opened in uvicorn's event loop; this one only proves it opens
    if args.check:
        anyio.run(check_store, args, settings, Access.READ_ONLY, CHECK_TIMEOUT)
    else:
        anyio.run(check_store, args, settings, Access.CREATE, START_TIMEOUT)
    for warning in warnings(settings, path):
        print(f"agentguard serve: warning: {warning}", file=sys.stderr)
    if args.check:
        names = ", ".join(sorted(gateway.proxies)) or "none"
        print(f"settings OK; services: {names}")
        return 0
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
    try:
        server.run()
    except SystemExit as exit_:  # uvicorn's startup failure (3), e.g. a port in use, logged
        return 2 if exit_.code else 0
    return 0 if server.started else 2


def run(args: argparse.Namespace) -> int:
    """Run ``serve``."""
    try:
        return _serve(args)
    except (ConfigurationError, OSError, ValueError) as error:
        print(f"agentguard serve: {one_line(error)}", file=sys.stderr)
        return 2
