"""The baseline of ``bench_gateway.py``: a minimal aiohttp pass-through proxy (server + client).

No guard, no swap, no scan: each request is forwarded to the upstream over a pooled keep-alive
client session and the answer copied back. It is what "a plain Python proxy" costs.

    python benchmarks/passthrough_aiohttp.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

_SKIPPED = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def application(upstream: str) -> web.Application:
    """The pass-through app forwarding every path to ``upstream``."""
    app = web.Application()
    sessions: list[aiohttp.ClientSession] = []

    async def open_session(_: web.Application) -> None:
        sessions.append(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False)
        )

    async def close_session(_: web.Application) -> None:
        await sessions[0].close()

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIPPED}
        body = await request.read()
        async with sessions[0].request(
            request.method, upstream + request.path_qs, headers=headers, data=body or None
        ) as answer:
            content = await answer.read()
            kind = answer.headers.get("content-type", "application/octet-stream")
            return web.Response(status=answer.status, body=content, headers={"content-type": kind})

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


if __name__ == "__main__":
    web.run_app(
        application(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
    )
