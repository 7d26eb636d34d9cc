"""What the agent sends besides the key's own place, over real sockets.

- An agentguard key (the presented access key, another user's key, a refresh key) anywhere but
  the credential position (path, query, another header's name or value, the body), raw or in
  any encoded form, is refused with 400 before anything goes upstream.
- Method overrides (headers and query parameters, every spelling, including the names PHP,
  Rack 2 and Laravel read leniently, and body fields) are authorised as the stricter method;
  those in headers and query never reach the vendor.
- Compressed request bodies are refused (415); upstream, only ``gzip, deflate`` is asked for.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote, unquote

import httpx
import pytest

from agentguard import Level, ServiceRoute
from agentguard.credentials._placement import UPSTREAM_ACCEPT_ENCODING
from tests.proxy.sockets import SocketGateway, socket_gateway

pytestmark = pytest.mark.anyio


def _b64(prefix: bytes) -> Callable[[str], str]:
    return lambda key: base64.b64encode(prefix + key.encode()).decode()


FORMS: dict[str, Callable[[str], str]] = {
    "raw": lambda key: key,
    "base64": _b64(b""),
    "base64-align-1": _b64(b"x"),
    "base64-align-2": _b64(b"xy"),
    "base64-unpadded": lambda key: _b64(b"x")(key).rstrip("="),
    "base64url": lambda key: base64.urlsafe_b64encode(b"\xfb" + key.encode()).decode().rstrip("="),
    "hex": lambda key: key.encode().hex(),
    "HEX": lambda key: key.encode().hex().upper(),
    "percent-every-byte": lambda key: "".join(f"%{byte:02X}" for byte in key.encode()),
    "percent-twice": lambda key: quote("".join(f"%{byte:02x}" for byte in key.encode()), safe=""),
    "json-u-escapes": lambda key: "".join(f"\\u{ord(char):04x}" for char in key),
}
# Header names are tokens, and arrive lower-cased: only forms that survive both are tested there.
TOKEN_FORMS = ("raw", "hex", "HEX", "percent-every-byte")
POSITIONS = ("path", "query-value", "query-name", "header-value", "header-name", "json-body")


def _request(position: str, text: str, key: str) -> dict[str, object]:
    headers = {"X-Api-Key": key}
    request: dict[str, object] = {"method": "GET", "url": "/crm/contacts", "headers": headers}
    if position == "path":
        request["url"] = "/crm/contacts/" + quote(text, safe="%")
    elif position == "query-value":
        request["url"] = "/crm/contacts?note=" + quote(text, safe="%")
    elif position == "query-name":
        request["url"] = "/crm/contacts?" + quote(text, safe="%") + "=1"
    elif position == "header-value":
        headers["X-Note"] = "see " + text
    elif position == "header-name":
        headers["X-" + text] = "1"
    else:
        request["method"] = "POST"
        request["content"] = (
            json.dumps({"note": "ok"})[:-1].encode() + b', "x": "' + (text.encode()) + b'"}'
        )
        headers["content-type"] = "application/json"
    return request


def _cases(gateway: SocketGateway) -> list[tuple[str, str, str, str]]:
    keys = {
        "presented": gateway.key(0),
        "refresh": gateway.refresh_key(0),
        "other-user": gateway.key(1),
    }
    cases = []
    for (who, secret), form, position in itertools.product(keys.items(), FORMS, POSITIONS):
        if position == "header-name" and form not in TOKEN_FORMS:
            continue
        cases.append((who, form, position, FORMS[form](secret)))
    return cases


async def test_a_key_outside_the_credential_position_never_goes_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="httpx")  # the test client's own log shows its URLs
    async with (
        socket_gateway() as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        cases = _cases(gateway)
        assert len(cases) >= 150
        for who, form, position, text in cases:
            response = await client.request(**_request(position, text, gateway.key(0)))  # type: ignore[arg-type]
            assert response.status_code == 400, (who, form, position, response.text)
            body = response.json()
            assert body["error"] == "invalid_request"
            # the path check may refuse an encoded '%' first: refused either way
            reasons = {"key_outside_credential_position"} | (
                {"malformed_request"} if position == "path" else set()
            )
            assert body["reason"] in reasons, (who, form, position, body)
            for secret in (gateway.key(0), gateway.key(1), gateway.refresh_key(0)):
                assert secret not in response.text
        assert gateway.crm.requests == []  # nothing of any of them reached the vendor
        clean = await client.get(
            "/crm/contacts?note=ag_at_short", headers={"X-Api-Key": gateway.key(0)}
        )
        assert clean.status_code == 200


async def test_a_key_deep_in_a_streamed_body_aborts_the_upstream_request() -> None:
    async with (
        socket_gateway(max_request_bytes=None) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        key = gateway.key(0)
        for form, encode in FORMS.items():
            encoded = encode(gateway.refresh_key(0)).encode()

            async def chunks(encoded: bytes = encoded) -> AsyncIterator[bytes]:
                yield b"a" * 150_000
                yield encoded[:7]  # split across chunks
                yield encoded[7:] + b"b" * 1000

            response = await client.post(
                "/crm/upload", headers={"X-Api-Key": key}, content=chunks()
            )
            assert response.status_code == 400, (form, response.text)
            assert response.json()["reason"] == "key_outside_credential_position"
        for seen in gateway.crm.requests:  # cut off before the key: never a complete body
            assert gateway.refresh_key(0) not in seen.raw and len(seen.body) < 151_000


OVERRIDE_HEADERS = [
    "X-HTTP-Method-Override",
    "x-http-method-override",
    "X-Http-Method-Override",
    "X-HTTP-METHOD-OVERRIDE",
    "X_HTTP_Method_Override",
    "X-Method-Override",
    "x-method-override",
    "X-HTTP-Method",
    "x_http_method",
]
OVERRIDE_QUERIES = [
    "_method=DELETE",
    "_METHOD=delete",
    "%5Fmethod=DELETE",
    "%5fmethod=PATCH",
    "_method=PUT&_method=GET",
    "X-HTTP-Method-Override=DELETE",
    "x_http_method_override=POST",
    "x-method-override=DELETE",
    "_method=%44ELETE",
]


async def test_a_method_override_needs_the_stricter_level_and_never_goes_upstream() -> None:
    async with (
        socket_gateway() as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        reader, writer = gateway.key(2), gateway.key(0)
        requests: list[tuple[list[tuple[str, str]], str]] = [
            ([(name, "DELETE")], "") for name in OVERRIDE_HEADERS
        ]
        requests += [([(name, "GET"), (name, "DELETE")], "") for name in OVERRIDE_HEADERS[:3]]
        requests += [([], query) for query in OVERRIDE_QUERIES]
        for extra, query in requests:
            url = "/crm/contacts" + ("?" + query if query else "")
            refused = await client.get(url, headers=[("X-Api-Key", reader), *extra])
            assert refused.status_code == 403, (extra, query, refused.text)
            assert refused.json()["error"] == "insufficient_scope"
        assert gateway.crm.requests == []
        for extra, query in requests:
            url = "/crm/contacts" + ("?" + query if query else "")
            allowed = await client.get(url, headers=[("X-Api-Key", writer), *extra])
            assert allowed.status_code == 200, (extra, query, allowed.text)
        assert len(gateway.crm.requests) == len(requests)
        for seen in gateway.crm.requests:
            assert seen.method == "GET" and seen.query == ""
            names = {name.replace("_", "-") for name, _ in seen.headers}
            assert not names & {"x-http-method-override", "x-method-override", "x-http-method"}
        same = await client.get(
            "/crm/contacts?_method=GET", headers={"X-Api-Key": reader, "X-HTTP-Method": "HEAD"}
        )
        assert same.status_code == 200  # an override to a read method needs read only


async def test_compressed_bodies_are_refused_and_upstream_is_asked_for_gzip_or_deflate() -> None:
    async with (
        socket_gateway() as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        key = gateway.key(0)
        for coding in ("gzip", "br", "deflate", "zstd", "identity, gzip", "GZIP", "x-custom"):
            response = await client.post(
                "/crm/contacts",
                headers={"X-Api-Key": key, "Content-Encoding": coding},
                content=b"\x1f\x8b compressed",
            )
            assert response.status_code == 415, (coding, response.text)
            assert response.json()["reason"] == "unsupported_content_encoding"
        assert gateway.crm.requests == []
        plain = await client.post(
            "/crm/contacts",
            headers={
                "X-Api-Key": key,
                "Content-Encoding": "identity",
                "Accept-Encoding": "br, zstd",
            },
            content=b"{}",
        )
        assert plain.status_code == 200
        (seen,) = gateway.crm.requests
        assert [v for n, v in seen.headers if n == "accept-encoding"] == [
            UPSTREAM_ACCEPT_ENCODING.decode()
        ]


async def test_a_form_field_override_on_a_read_level_post_needs_the_stricter_level() -> None:
    search = ServiceRoute(path="/search", methods={"POST": Level.READ})
    async with (
        socket_gateway(routes=(search,)) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        reader = {"X-Api-Key": gateway.key(2)}
        for form in (b"q=a&_method=DELETE", b"%5Fmethod=put&q=a", b"X-HTTP-Method-Override=PATCH"):
            binary = {**reader, "content-type": "application/octet-stream"}
            opaque = await client.post("/crm/search", headers=binary, content=form)
            assert opaque.status_code == 200  # not a form: the body is the vendor's business
            gateway.crm.requests.clear()
            form_headers = {**reader, "content-type": "application/x-www-form-urlencoded"}
            refused = await client.post("/crm/search", headers=form_headers, content=form)
            assert refused.status_code == 403, (form, refused.text)
        assert gateway.crm.requests == []
        plain = await client.post(
            "/crm/search",
            headers={**reader, "content-type": "application/x-www-form-urlencoded"},
            content=b"q=a&_method=POST",
        )
        assert plain.status_code == 200


#: Override spellings PHP, Rack 2 or Laravel read (query, content type, body): issue 14 item 4.
LENIENT_OVERRIDES = [
    ("?.method=DELETE", "application/json", b"{}"),
    ("?%2Emethod=DELETE", "application/json", b"{}"),
    ("?[method=DELETE", "application/json", b"{}"),
    ("?_method[]=PUT", "application/json", b"{}"),
    ("?q=a;_method=PATCH", "application/json", b"{}"),
    ("", "application/x-www-form-urlencoded", b"q=a&.method=DELETE"),
    ("", "application/x-www-form-urlencoded", b"q=a;_method=DELETE"),
    ("", "application/x-www-form-urlencoded", b"q=a; _method=DELETE"),
    ("", None, b"_method=DELETE"),
    ("", "text/plain", b"_method=DELETE"),
    ("", "application/json", b'{"q": "a", "_method": "DELETE"}'),
]  # a Content-Type with two fields ("form, text/plain", a form to PHP) is refused 415 anyway


async def test_overrides_lenient_frameworks_read_need_the_stricter_level() -> None:
    search = ServiceRoute(path="/search", methods={"POST": Level.READ})
    async with (
        socket_gateway(routes=(search,)) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
    ):
        reader, writer = gateway.key(2), gateway.key(0)
        for query, content_type, body in LENIENT_OVERRIDES:
            headers = {"X-Api-Key": reader}
            if content_type is not None:
                headers["Content-Type"] = content_type
            refused = await client.post("/crm/search" + query, headers=headers, content=body)
            assert refused.status_code == 403, (query, content_type, body, refused.text)
            assert refused.json()["error"] == "insufficient_scope"
        assert gateway.crm.requests == []
        for query, content_type, body in LENIENT_OVERRIDES:
            headers = {"X-Api-Key": writer}
            if content_type is not None:
                headers["Content-Type"] = content_type
            allowed = await client.post("/crm/search" + query, headers=headers, content=body)
            assert allowed.status_code == 200, (query, content_type, body, allowed.text)
        for seen in gateway.crm.requests:  # the query's overrides are stripped
            assert "method" not in unquote(seen.query).lower(), seen.query
