"""Method overrides as real frameworks read them: a differential test against a small model.

The oracle below is written from the frameworks' documented behaviour, independently of
:mod:`agentguard.credentials._overrides`:

- PHP (Symfony/Laravel ``getMethod()``): the ``X-HTTP-Method-Override`` header, else ``_method``
  from the parsed body, else from the query. PHP splits on ``&``, URL-decodes, then mangles the
  name: leading spaces dropped; ``a[b]`` is an array ``a``; an unmatched ``[``, ``.`` and space
  become ``_``; a NUL ends the name. The body is a form when the media type, cut at ``;``,
  ``,`` or space, is ``application/x-www-form-urlencoded``; Laravel reads a JSON body (a type
  containing ``/json`` or ``+json``) as the input bag.
- Rack 2 (``Rack::MethodOverride``): ``_method`` from a form body split on ``&`` and ``;`` (a
  POST with no ``Content-Type`` is a form), else the header.
- Express ``method-override`` with a ``qs``-parsed query or body getter: ``_method`` after
  URL-decoding, ``a[b]`` read as ``a``.

Every method any of them reads must be one :func:`override_methods` reports (so it gets
authorised), and none may survive :func:`upstream_query`.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote, unquote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import GuardRequest, ServiceConfig
from agentguard.credentials._placement import override_methods, upstream_query
from tests.fuzz.conftest import FUZZ

BEARER = ServiceConfig(name="proj", base_url="https://proj.example")
FORM = "application/x-www-form-urlencoded"


def _php_name(name: str) -> str:
    name = name.split("\x00", 1)[0].lstrip(" ")
    bracket = name.find("[")
    if bracket >= 0 and "]" in name[bracket:]:
        return name[:bracket].replace(" ", "_").replace(".", "_")
    return name.replace(" ", "_").replace(".", "_").replace("[", "_")


def _pairs(data: str, separators: str) -> list[tuple[str, str]]:
    out = []
    for piece in re.split(separators, data):
        if piece:
            key, _, value = piece.partition("=")
            out.append((unquote_plus(key), unquote_plus(value)))
    return out


def _last(pairs: list[tuple[str, str]], name: str) -> str | None:
    found = [value for key, value in pairs if key == name]
    return found[-1] if found else None


def framework_methods(
    headers: dict[str, str], query: str, content_type: str | None, body: str
) -> dict[str, str]:
    """What each modelled framework reads as the method of a POST (override readings only)."""
    read: dict[str, str] = {}
    header = headers.get("x-http-method-override")
    php_query = [(_php_name(k), v) for k, v in _pairs(query, "&")]
    php_type = re.split(r"[;, ]", (content_type or "").lower(), maxsplit=1)[0]
    php_body = [(_php_name(k), v) for k, v in _pairs(body, "&")] if php_type == FORM else []
    symfony = header or _last(php_body, "_method") or _last(php_query, "_method")
    if symfony:
        read["symfony"] = symfony.upper()
    if content_type is not None and ("/json" in content_type or "+json" in content_type):
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("_method"), str):
            read["laravel-json"] = document["_method"].upper()
    rack_type = (content_type or "").split(";")[0].strip().lower()
    if rack_type in ("", FORM, "multipart/form-data"):
        rack = _last(_pairs(body, r"[&;] *"), "_method") or header
        if rack:
            read["rack2"] = rack.upper()
    for where, data in (("query", query), ("body", body if rack_type == FORM else "")):
        qs = [(re.sub(r"\[.*", "", unquote(k)), v) for k, v in _pairs(data, "&")]
        express = _last(qs, "_method")
        if express:
            read[f"express-{where}"] = express.upper()
    return read


# --- generated spellings --------------------------------------------------------------------

UNDERSCORES = ["_", ".", " ", "[", "%5F", "%5f", "%2E", "%2e", "%20", "+", "%5B", "%255F"]
LEADING = ["", "+", "%20", "%20%20"]
TRAILING = ["", "[]", "[0]", "[x][y]", "%5B%5D"]


@st.composite
def override_names(draw: st.DrawFn) -> str:
    first = draw(st.sampled_from(UNDERSCORES))
    word = "".join(c.upper() if draw(st.booleans()) else c for c in "method")
    word = "".join(f"%{ord(c):02X}" if draw(st.integers(0, 5)) == 0 else c for c in word)
    return draw(st.sampled_from(LEADING)) + first + word + draw(st.sampled_from(TRAILING))


VALUES = st.sampled_from(["DELETE", "delete", "PUT", "Patch", "%44ELETE"])
CONTENT_TYPES = st.sampled_from(
    [
        None,
        FORM,
        FORM + "; charset=utf-8",
        "Application/X-WWW-Form-Urlencoded",
        FORM + ", text/plain",
        "text/plain",
        "application/json",
        "application/vnd.api+json",
        "application/octet-stream",
    ]
)
SEPARATORS = st.sampled_from(["&", ";", "; ", "&&"])


def _request(query: str, content_type: str | None) -> GuardRequest:
    headers = [(b"host", b"crm.test")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    return GuardRequest(
        method="POST",
        path="/search",
        headers=headers,
        query_string=query.encode(),
        scheme="https",
    )


def _assert_all_detected(
    query: str, content_type: str | None, body: str, read: dict[str, str]
) -> None:
    detected = set(override_methods(_request(query, content_type), body.encode("latin-1")))
    for framework, method in read.items():
        token = unquote(method) if "%" in method else method
        assert {method, token} & detected or "OVERRIDE" in detected, (
            framework,
            method,
            query,
            content_type,
            body,
            detected,
        )


@settings(FUZZ)
@given(
    name=override_names(),
    value=VALUES,
    where=st.sampled_from(["query", "body", "json"]),
    content_type=CONTENT_TYPES,
    separator=SEPARATORS,
    before=st.sampled_from(["", "q=a", "page=2&x=%26"]),
)
def test_every_override_a_framework_reads_is_authorised_and_stripped(
    *, name: str, value: str, where: str, content_type: str | None, separator: str, before: str
) -> None:
    pair = f"{name}={value}"
    query, body = before, "q=a"
    if where == "query":
        query = separator.join(p for p in (before, pair) if p)
    elif where == "body":
        body = separator.join(p for p in (before, pair) if p)
    else:
        body = json.dumps({"q": "a", unquote(name): unquote(value)})
    read = framework_methods({}, query, content_type, body)
    _assert_all_detected(query, content_type, body, read)
    forwarded = upstream_query(query.encode(), BEARER).decode()
    assert not framework_methods({}, forwarded, None, ""), (query, forwarded)


def test_the_reported_spellings_are_found() -> None:
    cases = [
        ("?.method=DELETE", "application/json", "{}"),
        ("?%2Emethod=DELETE", "application/json", "{}"),
        ("?[method=DELETE", "application/json", "{}"),
        ("?x=1&+_method=DELETE", "application/json", "{}"),  # PHP drops leading spaces
        ("", FORM, "q=a&.method=DELETE"),
        ("", FORM, "q=a&%20.method=DELETE"),
        ("", FORM, "q=a;_method=DELETE"),
        ("", FORM, "q=a; _method=DELETE"),
        ("", None, "_method=DELETE"),
        ("", "text/plain", "_method=DELETE"),
        ("", FORM + ", text/plain", "_method=DELETE"),
        ("", "application/json", '{"_method": "DELETE"}'),
        ("", "application/json", '{"_method": ["DELETE"]}'),
        ("?_method[]=DELETE", None, ""),
    ]
    for query, content_type, body in cases:
        found = override_methods(_request(query.lstrip("?"), content_type), body.encode())
        assert found and set(found) <= {"DELETE", "OVERRIDE"}, (query, content_type, body)


def test_ordinary_parameters_are_not_overrides() -> None:
    for query in ("method=DELETE", "+method=PUT", "_methods=PUT", "x_method=PUT", "q=_method"):
        assert override_methods(_request(query, FORM), query.encode()) == [], query
    assert override_methods(_request("", "application/json"), b'{"q": {"_method": "x"}}') == []
    assert override_methods(_request("", "application/json"), b"not json") == []
    assert upstream_query(b"a=1;.method=PUT&b=2", BEARER) == b"a=1&b=2"
    assert upstream_query(b"%20_method=PUT;a=1", BEARER) == b"a=1"
