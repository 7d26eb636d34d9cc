"""The gateway's own stack with nothing of agentguard's on it: the floor ``serve`` stands on.

uvicorn (h11, and uvloop when installed, as ``serve`` runs) serving a bare ASGI app
that forwards each request through an ``httpx.AsyncClient`` on agentguard's
``AiohttpTransport`` and copies the answer back: no Starlette, no guard, no swap, no scan, no
audit, no log line. ``bench_gateway.py`` measures it beside ``agentguard serve``, so what the
guard's work costs and what the server and client stack cost are told apart.

    python benchmarks/passthrough_stack.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import uvicorn

from agentguard._httpclient import AiohttpTransport

_SKIPPED = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def application(upstream: str) -> Any:
    """The bare ASGI pass-through to ``upstream``."""
    clients: list[httpx.AsyncClient] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    clients.append(httpx.AsyncClient(transport=AiohttpTransport()))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await clients[0].aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = [(k, v) for k, v in scope["headers"] if k.decode().lower() not in _SKIPPED]
        path = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        response = await clients[0].request(
            scope["method"], upstream + path.decode("latin-1"), headers=headers
        )
        body = response.content
        out = [(k, v) for k, v in response.headers.raw if k.decode().lower() not in _SKIPPED]
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    uvicorn.run(
        application(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="h11",  # as agentguard serve runs
    )
