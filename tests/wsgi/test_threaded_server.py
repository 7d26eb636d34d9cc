"""Many concurrent requests through a real threaded WSGI server: one loop decides them all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from agentguard import GuardRequest, Passage
from agentguard.wsgi import EventLoopPortal, default_portal
from tests.wsgi.conftest import WSGISetup


@pytest.fixture
def server(wsgi_setup: WSGISetup) -> Iterator[tuple[WSGISetup, BaseWSGIServer]]:
    httpd = make_server("127.0.0.1", 0, wsgi_setup.app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield wsgi_setup, httpd
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


def test_concurrent_requests_are_decided_on_one_loop(
    server: tuple[WSGISetup, BaseWSGIServer],
) -> None:
    setup, httpd = server
    loops: set[int] = set()
    threads: set[int] = set()
    original = setup.guard.admit

    async def recording(request: GuardRequest, **options: Any) -> Passage:
        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.get_ident())
        return await original(request, **options)

    setup.guard.admit = recording  # type: ignore[method-assign]
    url = f"http://127.0.0.1:{httpd.server_port}"

    def call(index: int) -> tuple[int, int]:
        with httpx.Client(base_url=url) as client:
            read = client.get("/crm/contacts", headers=setup.auth()).status_code
            write = client.post("/crm/contacts", headers=setup.auth()).status_code
            return read, write

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(64)))
    assert results == [(200, 403)] * 64
    assert len(loops) == 1
    assert len(threads) == 1
    decisions = [e for e in setup.events() if e["action"] == "guard.decision"]
    assert len(decisions) == 128


def test_portal_runs_calls_from_many_threads_and_restarts_after_close() -> None:
    portal = EventLoopPortal()

    async def loop_id() -> int:
        await asyncio.sleep(0)
        return id(asyncio.get_running_loop())

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda _: portal.call(loop_id), range(32)))
    assert len(ids) == 1
    assert portal.running
    portal.close()
    assert not portal.running
    portal.close()  # idempotent
    assert isinstance(portal.call(loop_id), int)
    assert portal.running
    portal.close()


def test_default_portal_is_shared() -> None:
    assert default_portal() is default_portal()
