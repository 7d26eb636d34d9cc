"""A small HTTP/1.1 load generator for ``bench_gateway.py`` when wrk is not installed.

``C`` keep-alive connections each send GET requests back to back for ``S`` seconds. The extra
headers of each request come from a file, one request per line, fields separated by TAB
(``Name: value``), taken in turn (and wrapping around). Prints one JSON object with the same
fields as the wrk script: requests, duration, errors, p50 and p99 latency.

    python benchmarks/loadgen.py HOST PORT PATH CONNECTIONS SECONDS [HEADERS_FILE]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Iterator


def requests(host: str, port: int, path: str, header_file: str | None) -> Iterator[bytes]:
    """The request bytes to send, endlessly."""
    lines = [""]
    if header_file:
        with open(header_file, encoding="ascii") as source:
            lines = [line.rstrip("\n") for line in source if line.strip()]
    built = [
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            + "".join(f"{field}\r\n" for field in line.split("\t") if field)
            + "\r\n"
        ).encode("ascii")
        for line in lines
    ]
    return itertools.cycle(built)


async def connection(
    host: str, port: int, source: Iterator[bytes], until: float, latencies: list[float]
) -> tuple[int, int]:
    """Requests until ``until``; returns (status errors, I/O errors)."""
    bad = 0
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, 1
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(next(source))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            bad += not 200 <= status < 400
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return bad, 1
    finally:
        writer.close()
    return bad, 0


async def main(arguments: list[str]) -> None:
    host, port, path = arguments[0], int(arguments[1]), arguments[2]
    count, seconds = int(arguments[3]), float(arguments[4])
    file = arguments[5] if len(arguments) > 5 and arguments[5] else None
    source = requests(host, port, path, file)
    latencies: list[float] = []
    began = time.perf_counter()
    until = began + seconds
    results = await asyncio.gather(
        *(connection(host, port, source, until, latencies) for _ in range(count))
    )
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies) or [0.0]
    figures = {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "status_errors": sum(status for status, _ in results),
        "io_errors": sum(io for _, io in results),
        "p50_us": int(ordered[len(ordered) // 2] * 1e6),
        "p99_us": int(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
