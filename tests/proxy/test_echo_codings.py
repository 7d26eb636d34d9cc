"""Issue 14, item 1: a compressed echo never reaches the agent.

A vendor on a real socket answers in a content coding of its choosing, whatever the gateway
asked for. Differential: the codings httpx decodes for the gateway (gzip, deflate, identity,
stacked or not) are decoded, scanned and reviewed, and sent on plain; every other coding (br,
zstd, compress, an unknown token, a refused coding stacked with a known one, in any case) is a
502 naming the service, audited, with nothing of the body passed on. Transfer codings other
than chunked never get through either.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from agentguard.review import ReviewContext, Verdict
from tests.support.codings import brotli_stored, zstd_raw
from tests.support.echo_gateway import CRM_KEY, Script, echo_gateway, json_answer, revealed

pytestmark = pytest.mark.anyio

ECHO = json.dumps({"error": f"Incorrect API key provided: {CRM_KEY}"}).encode()
CLEAN = json.dumps({"contacts": ["Ada", "Grace"], "note": "nothing secret"}).encode()


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


Encoder = Callable[[bytes], bytes]

REFUSED: list[tuple[list[bytes], Encoder]] = [
    ([b"br"], brotli_stored),
    ([b"zstd"], zstd_raw),
    ([b"BR"], brotli_stored),
    ([b"Zstd"], zstd_raw),
    ([b"gzip, br"], lambda data: brotli_stored(gzip.compress(data))),
    ([b"br, gzip"], lambda data: gzip.compress(brotli_stored(data))),
    ([b"identity, zstd"], zstd_raw),
    ([b"gzip", b"br"], lambda data: brotli_stored(gzip.compress(data))),  # two header lines
    ([b"compress"], lambda data: data),  # whatever the bytes: never passed on undecoded
    ([b"x-gzip"], gzip.compress),
    ([b"aes128gcm"], lambda data: data),
    ([b"sdch"], lambda data: data),
    ([b"gzip;q=1"], gzip.compress),  # not a coding httpx knows: it would pass it through
]

ACCEPTED: list[tuple[list[bytes], Encoder]] = [
    ([], lambda data: data),
    ([b"identity"], lambda data: data),
    ([b"gzip"], gzip.compress),
    ([b"GZIP"], gzip.compress),
    ([b"deflate"], zlib.compress),
    ([b"deflate"], raw_deflate),
    ([b"gzip, gzip"], lambda data: gzip.compress(gzip.compress(data))),
    ([b"deflate, gzip"], lambda data: gzip.compress(zlib.compress(data))),
    ([b"identity, gzip"], gzip.compress),
]


def coded(codings: list[bytes], encode: Encoder, body: bytes) -> Script:
    headers = [(b"content-encoding", coding) for coding in codings]
    return lambda _: json_answer(encode(body), *headers)


def ids(cases: list[tuple[list[bytes], Encoder]]) -> list[str]:
    return ["+".join(c.decode().strip() for c in codings) or "none" for codings, _ in cases]


@pytest.mark.parametrize(("codings", "encode"), REFUSED, ids=ids(REFUSED))
async def test_a_coding_the_gateway_cannot_decode_is_refused(
    codings: list[bytes], encode: Encoder
) -> None:
    async with echo_gateway(coded(codings, encode, ECHO)) as gateway:
        response = await gateway.call("crm")
        reasons = await gateway.reasons()
    assert response.status_code == 502
    body = response.json()
    assert (body["service"], body["reason"]) == ("crm", "upstream_protocol_error")
    assert "does not decode and scan" in body["error_description"]
    assert reasons[-1] == "upstream_protocol_error"  # audited as the proxy audits refusals
    assert not revealed(response, CRM_KEY)
    assert response.content != encode(ECHO)


async def test_a_refused_coding_is_refused_even_when_the_body_is_clean() -> None:
    async with echo_gateway(coded([b"br"], brotli_stored, CLEAN)) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 502
    assert response.json()["error_description"] == (
        "crm: the service answered in a coding the gateway does not decode and scan (br); refused"
    )


async def test_the_refusal_never_repeats_an_unknown_coding_token() -> None:
    async with echo_gateway(coded([CRM_KEY.lower().encode()], lambda d: d, CLEAN)) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 502
    assert "an unknown coding" in response.json()["error_description"]
    assert not revealed(response, CRM_KEY)


@pytest.mark.parametrize(("codings", "encode"), ACCEPTED, ids=ids(ACCEPTED))
async def test_a_decoded_coding_is_scanned_after_decoding(
    codings: list[bytes], encode: Encoder
) -> None:
    async with echo_gateway(coded(codings, encode, ECHO)) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 502
    assert response.json()["reason"] == "secret_echo_blocked"
    assert not revealed(response, CRM_KEY)


@pytest.mark.parametrize(("codings", "encode"), ACCEPTED, ids=ids(ACCEPTED))
async def test_a_decoded_coding_reaches_the_agent_plain(
    codings: list[bytes], encode: Encoder
) -> None:
    async with echo_gateway(coded(codings, encode, CLEAN)) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == CLEAN


async def test_a_large_gzip_stream_is_scanned_decoded_and_cut_at_the_echo() -> None:
    filler = json.dumps({"rows": [os.urandom(32).hex() for _ in range(4000)]}).encode()
    packer = zlib.compressobj(wbits=31)
    compressed = packer.compress(filler + ECHO) + packer.flush()
    pieces = [compressed[start : start + 4096] for start in range(0, len(compressed), 4096)]

    def script(_: dict[str, str]) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
        headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
        return 200, headers, pieces

    async with echo_gateway(script) as gateway:
        status, received, cut = await gateway.stream("crm")
        reasons = await gateway.reasons()
    assert (status, cut) == (200, True)
    assert received.startswith(filler[:1000])  # plain: decoded before the agent saw it
    assert CRM_KEY.encode() not in received
    assert reasons[-1] == "secret_echo_blocked"


async def test_response_reviewers_see_decoded_bytes() -> None:
    seen: list[str] = []

    async def recorder(context: ReviewContext, content: str) -> Verdict:
        seen.append(content)
        return Verdict.allow("recorder")

    async with echo_gateway(
        coded([b"gzip"], gzip.compress, CLEAN), response_reviewers=[recorder]
    ) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 200
    assert seen == [CLEAN.decode()]


@contextmanager
def raw_vendor(head: bytes, body: bytes) -> Iterator[str]:
    """A vendor that writes ``head`` and ``body`` verbatim on each connection (h11 in uvicorn
    would not let an app send a transfer coding other than chunked)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    piece = connection.recv(65536)
                    if not piece:
                        break
                    request += piece
                connection.sendall(head + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"br, chunked", b"deflate", b"gzip"])
async def test_a_transfer_coding_other_than_chunked_is_refused(coding: bytes) -> None:
    payload = gzip.compress(ECHO) if coding.startswith(b"gzip") else ECHO
    framed = chunked(payload) if coding.endswith(b"chunked") else payload
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: "
    head += coding + b"\r\nconnection: close\r\n\r\n"
    with raw_vendor(head, framed) as url:
        async with echo_gateway(vendor_url=url) as gateway:
            response = await gateway.call("crm")
            reasons = await gateway.reasons()
    assert response.status_code == 502
    assert (response.json()["service"], response.json()["reason"]) == (
        "crm",
        "upstream_protocol_error",
    )
    assert reasons[-1] == "upstream_protocol_error"
    assert not revealed(response, CRM_KEY)


def test_refused_coding_reads_every_listed_coding() -> None:
    from agentguard.asgi._relay import refused_coding

    def headers(*pairs: tuple[str, str]) -> httpx.Headers:
        return httpx.Headers(list(pairs))

    assert refused_coding(headers()) is None
    assert refused_coding(headers(("content-encoding", "gzip, deflate, identity"))) is None
    assert refused_coding(headers(("content-encoding", "gzip,"))) is None
    assert refused_coding(headers(("transfer-encoding", "chunked"))) is None
    assert refused_coding(headers(("content-encoding", "gzip, BR"))) == "br"
    assert refused_coding(headers(("content-encoding", "gzip"), ("content-encoding", "zstd"))) == (
        "zstd"
    )
    assert refused_coding(headers(("transfer-encoding", "gzip, chunked"))) == "gzip"


def test_the_hand_written_codings_are_real() -> None:
    import brotli  # dev dependencies: the check must run, not skip
    import zstandard

    assert brotli.decompress(brotli_stored(ECHO)) == ECHO
    assert zstandard.ZstdDecompressor().decompress(zstd_raw(ECHO)) == ECHO
