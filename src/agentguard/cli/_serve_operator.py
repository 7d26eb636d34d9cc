"""The operator listener beside the gateway: a second uvicorn server in the same event loop.

The gateway's server owns the process: its lifespan opens the shared store, it installs the
SIGTERM/SIGINT handlers, and after draining it re-raises the signal. The operator server:

- listens on a socket bound before anything starts, so a port in use is one line and exit 2;
- starts serving only once the gateway's lifespan reported startup complete (the store is
  open), and never runs a lifespan of its own;
- installs no signal handlers; it stops as soon as the gateway's server is asked to (a signal
  or an in-process ``should_exit``), and the gateway's lifespan shutdown, which closes the
  store, waits until the operator server has finished its in-flight requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from agentguard.asgi._types import ASGIApp, Message, Receive, Scope, Send
from agentguard.errors import ConfigurationError

__all__ = ["OperatorListener", "bind_operator_socket", "is_loopback"]

logger = logging.getLogger("agentguard.gateway")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it could resolve anywhere
        return False


def bind_operator_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or :class:`ConfigurationError` saying why not."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.create_server((address, port), family=family, backlog=2048)
    except OSError as error:
        why = os.strerror(error.errno) if error.errno else type(error).__name__
        raise ConfigurationError(
            f"cannot listen for operators on {host}:{port}: {why} "
            "(choose another port with --operator-port, or --no-operator)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _follower(uvicorn: Any, config: Any, leader: Any) -> Any:
    """A uvicorn server that installs no signal handlers and stops when ``leader`` does."""

    class Follower(uvicorn.Server):  # type: ignore[misc]  # uvicorn is untyped
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return

        async def on_tick(self, counter: int) -> bool:
            if leader.should_exit:
                self.should_exit = True
            result: bool = await super().on_tick(counter)
            return result

    return Follower(config)


class OperatorListener:
    """Runs the operator app on ``sock`` while the gateway's ``leader`` server runs.

    :meth:`wrap` the gateway's ASGI app with it before building the leader's config: the
    wrapper watches the lifespan messages to start the operator server after startup and to
    stop it before the gateway's shutdown closes the store.
    """

    def __init__(self, uvicorn: Any, app: ASGIApp, sock: socket.socket, config: Any) -> None:
        self._uvicorn = uvicorn
        self._app = app
        self._sock = sock
        self._config = config
        self._leader: Any = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The host and port the operator listener is bound to."""
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    def follow(self, leader: Any) -> None:
        """Stop when ``leader`` (the gateway's uvicorn server) is asked to stop."""
        self._leader = leader

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with its lifespan starting and stopping the operator server."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def sending(message: Message) -> None:
                await send(message)
                if message["type"] == "lifespan.startup.complete":
                    self._start()

            async def receiving() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    await self.stop()
                return message

            await app(scope, receiving, sending)

        return wrapped

    def _start(self) -> None:
        if self._task is not None or self._leader is None:
            return
        self._server = _follower(self._uvicorn, self._config, self._leader)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
        host, port = self.address
        where = f"[{host}]" if ":" in host else host
        logger.info("operator listener on http://%s:%d", where, port)

    async def stop(self) -> None:
        """Stop the operator server and wait until it has finished (idempotent)."""
        task = self._task
        if task is None:
            return
        self._server.should_exit = True
        try:
            await task
        except Exception as error:  # the gateway's own shutdown must go on
            logger.error("operator listener failed: %s", type(error).__name__)
