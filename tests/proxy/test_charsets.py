"""Charsets over real sockets: what the agent and the vendor read is what the gateway scanned.

Response side (scripted vendor, agent = httpx): a generated matrix of charset spellings
(duplicates, case, quoting, RFC 2231, unknown names) x codecs (EBCDIC, UTF-7, UTF-16/32) x the
secrets of a call (the user's vendor key, the admin key behind a minted token), plus bodies
declaring their own charset (XML declaration, HTML meta, EBCDIC XML). Oracle: the agent's
``response.text`` (httpx reads the charset with ``email.message``) and an XML parser over the
bytes never show the secret; a 200 carries one Content-Type that every reader reads as UTF-8.

Request side (recording vendor): the agent's own access key, its refresh key and another
user's key in a body declared in another charset. Oracle: what the vendor received, decoded
as a server framework would (``email.message`` charset, then the bytes' NULs removed), never
holds the key; an ambiguous Content-Type is refused with 415 before anything goes upstream.
"""

from __future__ import annotations

import base64
import email.message
import itertools
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.sockets import socket_gateway
from tests.support.echo_gateway import ADMIN_KEY, CRM_KEY, Answer, echo_gateway, revealed

pytestmark = pytest.mark.anyio


def _utf7(text: str) -> bytes:
    return b"+" + base64.b64encode(text.encode("utf-16-be")).rstrip(b"=") + b"-"


def _encoded(codec: str, text: str) -> bytes:
    return _utf7(text) if codec == "utf-7" else text.encode(codec)


CODECS = ("cp500", "cp037", "utf-7", "utf-16-be", "utf-16", "utf-32")
SPELLINGS = (
    "text/plain; charset={cs}; charset=utf-8",
    "text/plain; charset={cs}; charset=us-ascii",
    "text/plain; charset={cs}; charset=bogus",
    "text/plain; charset=utf-8; charset={cs}",
    "text/plain; charset*=''{cs}",
    "text/plain; charset*=utf-8''{cs}",
    "text/plain; charset*0={cs}",
    "application/json; charset={cs}; charset=utf-8",
    'text/plain; charset="{cs}"; charset="utf-8"',
    "text/plain;charset={cs};CHARSET=utf-8",
    "text/plain; charset={cs}",
    "TEXT/PLAIN; CHARSET={cs}",
    'text/plain; charset="{cs}"',
    "application/octet-stream; charset={cs}",
)


def _email_charset(value: str) -> str | None:
    message = email.message.Message()
    message["content-type"] = value
    found = message.get_content_charset(failobj=None)
    return None if found is None else str(found)


def _response_cases() -> Iterator[tuple[str, str, str, bytes]]:
    for (service, secret), codec, spelling in itertools.product(
        (("crm", CRM_KEY), ("projects", ADMIN_KEY)), CODECS, SPELLINGS
    ):
        yield service, secret, spelling.format(cs=codec), _encoded(codec, "token " + secret)
    for service, secret in (("crm", CRM_KEY), ("projects", ADMIN_KEY)):
        for codec in ("cp500", "cp037", "utf-16-le", "utf-7"):
            declaration = f'<?xml version="1.0" encoding="{codec}"?><a>'
            xml = _encoded(codec, declaration + secret + "</a>")
            if codec == "utf-7":  # the declaration must be readable before the switch
                xml = declaration.encode() + _utf7(secret) + b"</a>"
            yield service, secret, "application/xml", xml
            yield service, secret, "application/xml; charset=utf-8", xml
            meta = b'<html><meta charset="' + codec.encode() + b'">' + _encoded(codec, secret)
            yield service, secret, "text/html", meta
            yield service, secret, "text/html; charset=utf-8", meta


def _agent_reads(response: httpx.Response) -> list[str]:
    readings = [response.text]
    try:
        parsed = ET.fromstring(response.content)  # noqa: S314 - the oracle: an agent's parser
        readings.append(ET.tostring(parsed, encoding="unicode"))
    except (ET.ParseError, LookupError, ValueError):
        pass
    return readings


async def test_no_charset_reading_shows_the_agent_a_secret() -> None:
    cases = list(_response_cases())
    pending: list[tuple[str, str, str, bytes]] = []

    def script(received: dict[str, str]) -> Answer:
        _, _, content_type, body = pending.pop()
        return 200, [(b"content-type", content_type.encode())], [body]

    refused = 0
    async with echo_gateway(script) as gateway:
        for case in cases:
            pending.append(case)
            service, secret, content_type, _ = case
            response = await gateway.call(service)
            assert response.status_code in (200, 502), content_type
            assert not any(secret in text for text in _agent_reads(response)), content_type
            assert not revealed(response, secret), content_type
            if response.status_code == 502:
                refused += 1
                assert service in response.text
                continue
            (declared,) = response.headers.get_list("content-type")
            assert _email_charset(declared) == "utf-8", content_type
        reasons = await gateway.reasons()
    assert refused == len(cases)  # every case carried a secret or had two readings
    assert (
        reasons.count("upstream_protocol_error") + reasons.count("secret_echo_blocked") == refused
    )


CLEAN = {"name": "Zoë Ørsted", "note": "naïve café <b>"}


@pytest.mark.parametrize("codec", ["cp500", "cp037", "utf-7", "utf-16", "utf-32-le", "latin-1"])
async def test_a_clean_body_in_one_declared_charset_reads_the_same_at_the_agent(
    codec: str,
) -> None:
    text = json.dumps(CLEAN, ensure_ascii=False)
    body = text.encode(codec)
    header = f'application/json; v=2; charset="{codec}"'.encode()
    async with echo_gateway(lambda _: (200, [(b"content-type", header)], [body])) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 200
    assert response.headers.get_list("content-type") == ["application/json; v=2; charset=utf-8"]
    assert response.text == text
    assert response.json() == json.loads(response.content) == CLEAN


async def test_a_clean_xml_document_is_reencoded_with_its_declaration() -> None:
    document = '<?xml version="1.0" encoding="cp500"?><a>Zoë</a>'
    answer = (200, [(b"content-type", b"application/xml")], [document.encode("cp500")])
    async with echo_gateway(lambda _: answer) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 200
    assert response.content == b'<?xml version="1.0" encoding="utf-8"?><a>Zo\xc3\xab</a>'
    assert ET.fromstring(response.content).text == "Zoë"  # noqa: S314 - our own document


async def test_a_streamed_body_declaring_utf7_late_is_cut() -> None:
    filler = b"<p>" + b"x" * 100_000 + b"</p>"
    late = b'<meta charset="utf-7">' + _utf7(CRM_KEY)
    answer = (200, [(b"content-type", b"text/html")], [filler, late])
    async with echo_gateway(lambda _: answer) as gateway:
        status, received, cut = await gateway.stream("crm")
    # Started and cut when the key comes after the first released bytes; a whole 502 when the
    # upstream's pieces reach the proxy together (a loaded machine). Never the key.
    assert (status, cut) in ((200, True), (502, False))
    assert _utf7(CRM_KEY) not in received


async def test_a_streamed_ebcdic_body_is_scanned_decoded() -> None:
    chunks = [("y" * 9000).encode("cp500")] * 12 + [CRM_KEY.encode("cp500")]
    answer = (200, [(b"content-type", b"text/plain; charset=cp500")], chunks)
    async with echo_gateway(lambda _: answer) as gateway:
        status, received, cut = await gateway.stream("crm")
    # Started and cut when the key comes after the first released bytes; a whole 502 when the
    # upstream's pieces reach the proxy together (a loaded machine). Never the key.
    assert (status, cut) in ((200, True), (502, False))
    assert CRM_KEY.encode() not in received


# -- the request side ------------------------------------------------------------------------


class _Recorder:
    """A vendor that records each body with its Content-Type and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        kinds = [v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"]
        self.received.append((kinds[0] if kinds else None, body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _vendor_reads(content_type: str | None, body: bytes) -> list[str]:
    charset = _email_charset(content_type) if content_type else None
    readings = [body.replace(b"\0", b"").decode("latin-1")]
    try:
        readings.append(body.decode(charset or "utf-8", "replace"))
    except LookupError:
        pass
    return readings


REQUEST_SPELLINGS = (
    "application/json; charset={cs}",
    "text/plain; charset={cs}",
    "text/plain; charset={cs}; charset=utf-8",
    "text/plain; charset*=''{cs}",
    "application/x-www-form-urlencoded; CHARSET={cs}",
    "application/octet-stream",
    "",
)


@pytest.mark.parametrize("streamed", [False, True], ids=["capped", "streamed"])
async def test_no_charset_carries_our_key_to_the_vendor(streamed: bool) -> None:
    vendor = _Recorder()
    options: dict[str, Any] = {} if streamed else {"max_request_bytes": 1 << 20}
    sent = refused = 0
    async with socket_gateway(serve=vendor, **options) as gateway:
        keys = {
            "presented": gateway.key(0),
            "refresh": gateway.refresh_key(0),
            "other-user": gateway.key(1),
        }
        async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
            for (kind, key), codec, spelling in itertools.product(
                keys.items(), ("utf-16-le", "utf-16", "utf-32", "cp500", "cp037", "utf-7"),
                REQUEST_SPELLINGS,
            ):  # fmt: skip
                padding = "p" * (3000 if streamed else 10)
                body = _encoded(codec, json.dumps({"pad": padding, "note": key}))
                headers = {"X-Api-Key": gateway.key(0)}
                if spelling:
                    headers["content-type"] = spelling.format(cs=codec)
                response = await client.post("/crm/contacts", content=body, headers=headers)
                sent += 1
                assert response.status_code in (200, 400, 415), (kind, codec, spelling)
                assert key not in response.text
                refused += response.status_code != 200
    for content_type, received in vendor.received:  # the oracle: no reading shows a key
        for key in keys.values():
            assert not any(key in text for text in _vendor_reads(content_type, received))
    assert sent == 3 * 6 * len(REQUEST_SPELLINGS)
    # only EBCDIC or UTF-7 bytes with no charset at all pass: no reader decodes them so
    assert sent - refused == len(vendor.received) <= 3 * 3 * 2


async def test_a_clean_body_in_another_charset_reaches_the_vendor_unchanged() -> None:
    vendor = _Recorder()
    body = json.dumps(CLEAN, ensure_ascii=False).encode("utf-16")
    async with (
        socket_gateway(serve=vendor) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=15) as client,
    ):
        response = await client.post(
            "/crm/contacts",
            content=body,
            headers={
                "X-Api-Key": gateway.key(0),
                "content-type": "application/json; charset=utf-16",
            },
        )
    assert response.status_code == 200
    assert vendor.received == [("application/json; charset=utf-16", body)]
