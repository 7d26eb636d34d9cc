"""The gateway's own stack with nothing of agentguard's on it: the floor ``serve`` stands on.

A bare ASGI app that forwards each request upstream and copies the answer back: no Starlette,
no guard, no swap, no scan, no audit, no log line. By default it runs as ``serve`` does:
uvicorn (h11) serving it, the request going out through an ``httpx.AsyncClient`` on
agentguard's ``AiohttpTransport``. ``bench_gateway.py`` measures it beside ``agentguard
serve``, so what the guard's work costs and what the server and client stack cost are told
apart. ``--server granian`` (when granian is installed) and ``--client aiohttp`` (aiohttp's
client session straight, no httpx models) measure the other stacks the gateway could stand on
(``bench_gateway.py --floors``).

    python benchmarks/passthrough_stack.py PORT UPSTREAM_URL [--server uvicorn|granian]
        [--client httpx|aiohttp]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import aiohttp
import httpx

from agentguard._httpclient import AiohttpTransport

_SKIPPED = frozenset({"host", "content-length", "connection", "transfer-encoding"})
_SKIPPED_OUT = frozenset({b"content-length", b"connection", b"transfer-encoding"})
_UPSTREAM = "PASSTHROUGH_UPSTREAM"  # how a server that imports the app by name learns its
_CLIENT = "PASSTHROUGH_CLIENT"  # settings (granian's worker)


def application(upstream: str, client: str = "httpx") -> Any:
    """The bare ASGI pass-through to ``upstream`` over ``client`` (``httpx`` or ``aiohttp``)."""
    held: list[Any] = []

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if client == "aiohttp":
                    held.append(aiohttp.ClientSession(auto_decompress=False))
                else:
                    held.append(httpx.AsyncClient(transport=AiohttpTransport()))
                await send({"type": "lifespan.startup.complete"})
            else:
                await (held[0].close() if client == "aiohttp" else held[0].aclose())
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def over_httpx(method: str, url: str, headers: Any) -> tuple[int, Any, bytes]:
        response = await held[0].request(method, url, headers=headers)
        return response.status_code, response.headers.raw, response.content

    async def over_aiohttp(method: str, url: str, headers: Any) -> tuple[int, Any, bytes]:
        pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        async with held[0].request(method, url, headers=pairs) as response:
            return response.status, response.raw_headers, await response.read()

    forward = over_aiohttp if client == "aiohttp" else over_httpx

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.decode().lower() not in _SKIPPED]
        path = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        url = upstream + path.decode("latin-1")
        status, raw, body = await forward(scope["method"], url, headers)
        out = [(k, v) for k, v in raw if k.lower() not in _SKIPPED_OUT]
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


# What granian imports by name ("passthrough_stack:app") in its worker process.
app = application(os.environ.get(_UPSTREAM, ""), os.environ.get(_CLIENT, "httpx"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("upstream")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--client", choices=("httpx", "aiohttp"), default="httpx")
    arguments = parser.parse_args()
    if arguments.server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        os.environ[_UPSTREAM], os.environ[_CLIENT] = arguments.upstream, arguments.client
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        Granian(
            "passthrough_stack:app",
            address="127.0.0.1",
            port=arguments.port,
            interface=Interfaces.ASGI,
            workers=1,
            loop=Loops.asyncio,
            log_enabled=False,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        application(arguments.upstream, arguments.client),
        host="127.0.0.1",
        port=arguments.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http="h11",  # as agentguard serve runs
    )


if __name__ == "__main__":
    main()
