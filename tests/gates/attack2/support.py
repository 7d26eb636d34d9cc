"""Helpers for the second attack on issue 20: a guard world, real loopback servers (uvicorn for
ASGI apps, Werkzeug's threaded server for WSGI apps), and the operator's decision."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server

from agentguard import RouteRule
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.support import World, approve, build_world
from tests.support.servers import free_port


def world(rules: Sequence[RouteRule]) -> World:
    """A world (alice, bob, reader; a MemoryStore) over ``rules``, built outside any loop."""

    async def build() -> World:
        clock = FakeClock()
        return await build_world(MemoryStore(clock=clock), clock, rules)

    return asyncio.run(build())


def decide(w: World, approval_id: str) -> None:
    """An operator approves ``approval_id`` (as the CLI does, on the shared store)."""
    asyncio.run(approve(w.guard, approval_id))


def shown(w: World, approval_id: str) -> Any:
    """The approval record, as ``agentguard approvals show`` reads it."""
    store = w.guard.approval_store
    assert store is not None
    return asyncio.run(store.get_approval(approval_id))


@contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """``app`` on Werkzeug's threaded server on a free loopback port; its base URL."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
