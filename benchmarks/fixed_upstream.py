"""A fast fixed-response HTTP/1.1 upstream for ``bench_gateway.py`` when nginx is not installed.

Every request (any method, any path) gets the same small JSON answer on a keep-alive connection.
It parses only what it must (the header block and a ``Content-Length`` body), so that it costs
little next to the proxies measured in front of it.

    python benchmarks/fixed_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import sys

BODY = b'{"contacts": ["Ada", "Grace", "Hedy"], "total": 3}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class _Fixed(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(head[at + 17 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(ANSWER)


async def serve(port: int) -> None:
    """Answer on ``127.0.0.1:port`` until killed."""
    server = await asyncio.get_running_loop().create_server(_Fixed, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
