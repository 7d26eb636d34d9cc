"""A fake vendor for the attack tests: answers 200 to everything and appends every request it
receives (method, raw target, headers, body) as one JSON line to the file named by argv[2]."""

from __future__ import annotations

import asyncio
import json
import sys


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    log = sys.argv[2]
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            headers = []
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(b":")
                    headers.append(
                        (name.strip().lower().decode("latin-1"), value.strip().decode("latin-1"))
                    )
            found = dict(headers)
            body = b""
            if "content-length" in found:
                body = await reader.readexactly(int(found["content-length"]))
            elif found.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
            with open(log, "a") as sink:  # noqa: ASYNC230 - a test fake
                sink.write(
                    json.dumps(
                        {
                            "method": method.decode(),
                            "target": target.decode("latin-1"),
                            "headers": headers,
                            "body": body.decode("latin-1"),
                        }
                    )
                    + "\n"
                )
            out = b'{"ok": true}'
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(out) + out
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _main() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main())
