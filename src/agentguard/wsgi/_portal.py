"""One background event loop for the whole process, shared by every WSGI request.

The guard's core is async and its stores hold loop-bound resources (connection pools, locks).
A WSGI server calls the app from many threads; starting a loop per request would rebuild those
resources every time and break any that cannot cross loops. Instead one daemon thread runs one
loop (an :func:`anyio.from_thread.start_blocking_portal`), started on first use, and each
request thread hands its coroutine over and blocks until it finishes.

After ``os.fork()`` (gunicorn ``--preload``) the child cannot use the parent's loop thread, so a
portal notices the changed process id and starts a fresh loop in the child.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from typing_extensions import TypeVarTuple, Unpack

__all__ = ["EventLoopPortal", "default_portal"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class EventLoopPortal:
    """A lazily started event loop thread that runs coroutines for synchronous callers.

    Thread-safe: any number of threads may :meth:`call` at once; their coroutines run
    concurrently on the one loop. :meth:`close` stops the loop (it is started again on the next
    call); the process-wide portal closes itself at interpreter exit.

    Args:
        backend: the anyio backend (``"asyncio"`` or ``"trio"``).
        backend_options: passed to the backend (e.g. ``{"use_uvloop": True}``).
    """

    def __init__(
        self, backend: str = "asyncio", backend_options: dict[str, Any] | None = None
    ) -> None:
        self.backend = backend
        self.backend_options = backend_options
        self._lock = threading.Lock()
        self._manager: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._pid = 0

    def __repr__(self) -> str:
        state = "running" if self._portal is not None else "stopped"
        return f"EventLoopPortal(backend={self.backend!r}, {state})"

    @property
    def running(self) -> bool:
        """Whether the loop thread is running in this process."""
        return self._portal is not None and self._pid == os.getpid()

    def _get(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None and self._pid == os.getpid():
            return portal
        with self._lock:
            if self._portal is None or self._pid != os.getpid():
                # After a fork the parent's loop thread does not exist here: start our own.
                manager = start_blocking_portal(self.backend, self.backend_options)
                self._portal = manager.__enter__()
                self._manager = manager
                self._pid = os.getpid()
            return self._portal

    def call(self, func: Callable[[Unpack[Ts]], Awaitable[T]], *args: Unpack[Ts]) -> T:
        """Run ``func(*args)`` on the loop and return its result (or raise its exception).

        Must not be called from the loop thread itself (that would deadlock; anyio raises).
        """
        return self._get().call(func, *args)

    def close(self) -> None:
        """Stop the loop thread, waiting for running calls to finish. Idempotent."""
        with self._lock:
            manager, self._manager, self._portal = self._manager, None, None
            owned = self._pid == os.getpid()
        if manager is not None and owned:
            manager.__exit__(None, None, None)


_default = EventLoopPortal()
atexit.register(_default.close)


def default_portal() -> EventLoopPortal:
    """The process-wide portal every :class:`AgentGuardWSGIMiddleware` uses by default."""
    return _default
