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

The operator listener (``[operator]``: approvals, authenticated by operator tokens) runs in the
same process and event loop on its own port, 127.0.0.1:8081 by default
(:mod:`agentguard.cli._serve_operator`); ``--operator-port`` moves it, ``--no-operator`` (or
``[operator] enabled = false``) turns it off. Its port in use, or the same as the gateway's, is
exit code 2 before anything starts; a host that is not a loopback address is a warning on
stderr. SIGTERM drains both listeners; the exit behaviour above is unchanged.
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from agentguard._clock import SystemClock
from agentguard._extras import import_extra
from agentguard.cli._operator import one_line
from agentguard.cli._serve_operator import OperatorListener, bind_operator_socket, is_loopback
from agentguard.cli._serve_workers import check_workers, run_workers
from agentguard.cli._target import Access, check_store, config_path
from agentguard.config import NO_KEK, Settings, StoreSettings, load_settings
from agentguard.errors import ConfigurationError
from agentguard.gateway import build_gateway, configure_logging
from agentguard.storage._protocols import StorageError
from agentguard.storage._urls import describe_store

__all__ = [
    "CHECK_TIMEOUT",
    "START_TIMEOUT",
    "operator_warnings",
    "run",
    "serve_gateway",
    "settings_for",
    "warnings",
]

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


def settings_for(args: argparse.Namespace) -> tuple[Settings, Path]:
    """The settings ``serve`` runs with: the file, then the command line's overrides."""
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
    if args.operator_port is not None and not 0 <= args.operator_port <= 65535:
        raise ConfigurationError("--operator-port is from 0 to 65535")
    operator = settings.operator.model_copy(
        update={
            key: value
            for key, value in (
                ("port", args.operator_port),
                ("enabled", False if args.no_operator else None),
            )
            if value is not None
        }
    )
    return settings.model_copy(update={"server": server, "operator": operator}), path


def operator_warnings(settings: Settings) -> list[str]:
    """What is risky about the operator listener ``settings`` describe."""
    host = settings.operator.host
    if not settings.operator.enabled or is_loopback(host):
        return []
    return [
        f"the operator listener binds {host}, which is not a loopback address: anyone who can "
        'reach it may try operator tokens; keep [operator] host = "127.0.0.1" unless a '
        "firewall or a private network stands in front of it"
    ]


def _check_ports(settings: Settings) -> None:
    main, operator = settings.server, settings.operator
    if operator.enabled and operator.port != 0 and operator.port == main.port:
        raise ConfigurationError(
            f"the operator listener and the gateway both want port {main.port}: "
            "set [operator] port or pass --operator-port (or --no-operator)"
        )


async def _check_limit_store(settings: Settings) -> None:
    """Probe a separate limit store (``[limits] store``) with a read of one counter, so a
    Redis that does not answer stops the start (and ``--check``) instead of refusing every
    call with 503 later."""
    url = settings.limits.store
    if url is None or not (settings.budgets or settings.rate_limits):
        return
    from agentguard.storage._redis_limits import RedisLimitStore

    where = describe_store(url)
    try:
        store = RedisLimitStore(url, timeout=CHECK_TIMEOUT)
    except ValueError:  # redis-py's refusal of the URL may quote the password
        raise ConfigurationError(f"limits.store is not a valid Redis URL ({where})") from None
    try:
        ends = SystemClock().now() + timedelta(seconds=1)
        with anyio.fail_after(CHECK_TIMEOUT + 1):
            await store.charge("serve-check", cost=0, limit=0, expires_at=ends)
    except (StorageError, TimeoutError) as error:
        raise ConfigurationError(
            f"the limit store at {where} did not answer ({type(error).__name__})"
        ) from None
    finally:
        await store.close()


def _serve(args: argparse.Namespace) -> int:
    settings, path = settings_for(args)
    check_workers(args.workers, settings)
    uvicorn = import_extra("uvicorn")  # before anything else is built
    gateway = build_gateway(settings)
    # the gateway's own store is opened in uvicorn's event loop; this one only proves it opens
    if args.check:
        anyio.run(check_store, args, settings, Access.READ_ONLY, CHECK_TIMEOUT)
    else:
        anyio.run(check_store, args, settings, Access.CREATE, START_TIMEOUT)
    anyio.run(_check_limit_store, settings)
    _check_ports(settings)
    operator_app = getattr(gateway, "operator_app", None)  # None: disabled
    # bound before the warnings, so a port in use is the only line printed
    sock = None
    if operator_app is not None and not args.check:
        sock = bind_operator_socket(settings.operator.host, settings.operator.port)
    try:
        for warning in warnings(settings, path) + operator_warnings(settings):
            print(f"agentguard serve: warning: {warning}", file=sys.stderr)
        if args.check:
            names = ", ".join(sorted(gateway.proxies)) or "none"
            print(f"settings OK; services: {names}")
            return 0
        if args.workers > 1:
            return run_workers(args, settings, _config(uvicorn, gateway.app, settings), sock)
        configure_logging(settings.logging.level, settings.logging.format)
        return serve_gateway(uvicorn, gateway, settings, sock)
    finally:
        if sock is not None:
            sock.close()


def serve_gateway(
    uvicorn: Any,
    gateway: Any,
    settings: Settings,
    operator_sock: socket.socket | None,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Run ``gateway`` (and its operator listener on ``operator_sock``) until it is stopped;
    on ``sockets`` already bound (a worker of ``--workers``), else on the settings' address."""
    operator_app = getattr(gateway, "operator_app", None)
    listener = None
    if operator_app is not None and operator_sock is not None:
        config = _config(uvicorn, operator_app, settings, operator=True)
        listener = OperatorListener(uvicorn, operator_app, operator_sock, config)
    app = gateway.app if listener is None else listener.wrap(gateway.app)
    server = uvicorn.Server(_config(uvicorn, app, settings))
    if listener is not None:
        listener.follow(server)
    try:
        server.run(sockets=sockets)
    except SystemExit as exit_:  # uvicorn's startup failure (3), e.g. a port in use, logged
        return 2 if exit_.code else 0
    return 0 if server.started else 2


def _config(uvicorn: Any, app: Any, settings: Settings, *, operator: bool = False) -> Any:
    """The uvicorn config of the gateway's listener, or of the operator listener."""
    options: dict[str, Any] = {
        "log_config": None,
        "access_log": False,  # ours omits query strings, which may carry vendor keys
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.server.graceful_timeout),
        # h11, also where httptools is installed (uvicorn[standard] brings it): the request
        # smuggling and header-cap suite (tests/fuzz/test_smuggling.py) holds on h11; httptools
        # answers conflicting Content-Length/Transfer-Encoding framing, absolute-form targets
        # and header blocks over 16 KiB instead of refusing them.
        "http": "h11",
    }
    if operator:  # its socket is bound already; the gateway's lifespan opens the store
        return uvicorn.Config(
            app,
            host=settings.operator.host,
            port=settings.operator.port,
            lifespan="off",
            proxy_headers=False,
            **options,
        )
    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        lifespan="on",
        proxy_headers=settings.server.proxy_headers,
        forwarded_allow_ips=settings.server.forwarded_allow_ips,
        **options,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``serve``."""
    try:
        return _serve(args)
    except (ConfigurationError, OSError, ValueError) as error:
        print(f"agentguard serve: {one_line(error)}", file=sys.stderr)
        return 2
