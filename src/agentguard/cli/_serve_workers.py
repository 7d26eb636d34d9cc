"""``agentguard serve --workers N``: N gateway processes serving the same listening sockets.

The parent does what a single ``serve`` does before listening (settings, store, ports), binds
the gateway's socket and the operator listener's once, then starts ``N`` worker processes that
serve on them; the kernel hands each new connection to one worker. Workers are *spawned*, not
forked: each imports agentguard afresh and builds its own gateway, with its own event loop,
store connections, upstream pools, audit writer and live-stream registry. They are instances
of one deployment on one store, exactly as several gateways behind a load balancer are: every
decision is made live against the store, so no worker has state another one needs. That is
also why what lives only in one process is refused: a ``memory://`` store (each worker would
have its own users, keys and audit log).

Signals: the workers run in a process group of their own, so a Ctrl-C in a terminal reaches
the parent only. On SIGTERM or SIGINT the parent sends each worker SIGTERM once; each drains
like a single ``serve`` (in-flight requests finish for up to ``server.graceful_timeout``
seconds, then its audit writer is flushed and its store closed); the parent waits for all of
them and then ends as terminated by the signal it got. A worker still running
``graceful_timeout + 10`` seconds later is killed. A worker that ends by itself is logged and
replaced after a second; if workers keep ending within ``_SHORT_LIFE`` seconds of starting
(a store that went away, a port taken), the parent gives up after ``_RETRIES`` in a row, stops
the others and exits with 2. A worker whose parent disappears (SIGKILL) notices the closed pipe
and drains itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from agentguard.config import Settings
from agentguard.errors import ConfigurationError

__all__ = ["check_workers", "run_workers", "worker_main"]

logger = logging.getLogger("agentguard.serve")

_SPAWN = multiprocessing.get_context("spawn")
multiprocessing.allow_connection_pickling()  # sockets travel to spawned workers
_SHORT_LIFE = 10.0  # seconds: a worker that ends sooner than this failed to start
_RETRIES = 3
_POLL = 0.2
_KILL_AFTER = 10.0  # seconds past graceful_timeout


def check_workers(workers: int, settings: Settings) -> None:
    """Refuse a worker count, or a store, that several processes cannot share."""
    if workers < 1:
        raise ConfigurationError("--workers is 1 or more")
    if workers > 1 and settings.store.url.startswith("memory:"):
        raise ConfigurationError(
            "--workers needs a store the workers share (sqlite:///path.db or postgresql://...): "
            "with memory:// each worker would have its own users, keys and audit log"
        )


def worker_main(
    args: argparse.Namespace,
    gateway_sock: socket.socket,
    operator_sock: socket.socket | None,
    parent: Connection,
) -> None:
    """A worker's body (in a spawned process): build the gateway, serve until stopped."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the parent, which stops us once
    from agentguard._extras import import_extra
    from agentguard.cli._serve import serve_gateway, settings_for
    from agentguard.gateway import build_gateway, configure_logging

    settings, _ = settings_for(args)
    configure_logging(settings.logging.level, settings.logging.format)
    uvicorn = import_extra("uvicorn")
    gateway = build_gateway(settings)
    threading.Thread(target=_drain_when_orphaned, args=(parent,), daemon=True).start()
    code = serve_gateway(uvicorn, gateway, settings, operator_sock, [gateway_sock])
    sys.exit(code)


def _drain_when_orphaned(parent: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        parent.recv()  # the parent never sends: this returns when its end closes
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Worker:
    process: BaseProcess
    pipe: Connection
    started: float = field(default_factory=time.monotonic)


class _Supervisor:
    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        sockets: tuple[socket.socket, socket.socket | None],
    ) -> None:
        self.args = args
        self.settings = settings
        self.sockets = sockets
        self.workers: list[_Worker | None] = [None] * args.workers
        self.received: int | None = None
        self.failures = 0

    def start(self, index: int) -> None:
        receiver, sender = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=worker_main,
            args=(self.args, *self.sockets, receiver),
            name=f"agentguard-worker-{index}",
        )
        process.start()
        receiver.close()  # the worker holds its end; ours closing tells it we are gone
        self.workers[index] = _Worker(process, sender)
        logger.info("worker %d started (pid %s)", index, process.pid)

    def run(self) -> int:
        for index in range(len(self.workers)):
            self.start(index)
        while self.received is None:
            time.sleep(_POLL)
            for index, worker in enumerate(self.workers):
                if worker is None or worker.process.exitcode is None:
                    continue
                lived = time.monotonic() - worker.started
                logger.error(
                    "worker %d (pid %s) ended with code %s after %.1f s",
                    index, worker.process.pid, worker.process.exitcode, lived,
                )  # fmt: skip
                worker.pipe.close()
                self.workers[index] = None
                self.failures = self.failures + 1 if lived < _SHORT_LIFE else 0
                if self.failures >= _RETRIES:
                    logger.error("workers keep ending at start; stopping")
                    self.stop()
                    return 2
                if self.received is None:
                    time.sleep(1.0)
                    self.start(index)
        self.stop()
        return 0

    def stop(self) -> None:
        """SIGTERM to every worker once, then wait for all of them (kill the overdue)."""
        running = [worker for worker in self.workers if worker is not None]
        for worker in running:
            if worker.process.exitcode is None and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.graceful_timeout + _KILL_AFTER
        for worker in running:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                logger.error("worker pid %s did not stop in time; killed", worker.process.pid)
                worker.process.kill()
                worker.process.join()
            worker.pipe.close()


def run_workers(
    args: argparse.Namespace,
    settings: Settings,
    config: Any,
    operator_sock: socket.socket | None,
) -> int:
    """Bind the gateway's socket with ``config`` (uvicorn's), run ``args.workers`` workers on
    it until SIGTERM or SIGINT, and return (or end by that signal) as a single ``serve``."""
    from agentguard.gateway import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    gateway_sock = config.bind_socket()
    supervisor = _Supervisor(args, settings, (gateway_sock, operator_sock))

    def received(number: int, frame: object) -> None:
        supervisor.received = number

    previous = {
        number: signal.signal(number, received) for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        code = supervisor.run()
    finally:
        gateway_sock.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    if supervisor.received is not None and code == 0:  # end as terminated by it, as uvicorn does
        logger.info("workers stopped")
        signal.raise_signal(supervisor.received)
    return code
