"""Strict Content-Type parsing and the body-charset reading, against the readers clients use.

Oracles: ``email.message`` (what httpx's ``response.charset_encoding`` and ``response.text``
use: first value wins, RFC 2231 understood), a naive first-wins splitter and a last-wins one
(what simple parsers, and agentguard before, did). A header is either refused, or every reader
finds the same charset in it; the canonical form the gateway sends reads as UTF-8 to all.
"""

from __future__ import annotations

import codecs
import email.message
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentguard._body_charset import (
    ConflictingCharsets,
    body_encoding,
    check_declarations,
    declare_utf8_in_body,
)
from agentguard._content_type import AmbiguousContentType, ContentType, parse_content_type

CHARSETS = ["utf-8", "UTF-8", "cp500", "cp037", "utf-7", "utf-16", "utf-16-le", "us-ascii"]
CHARSETS += ["latin-1", "bogus", "base64", "", "utf-32", "ISO-8859-1", "x-unknown"]
NAMES = ["charset", "CHARSET", "Charset", "charset*", "charset*0", "charset*0*", "boundary", "v"]
SPACES = ["", " ", "  ", "\t"]


def _email_charset(value: str) -> str | None:
    message = email.message.Message()
    message["content-type"] = value
    charset = message.get_content_charset(failobj=None)
    return charset if charset is None else str(charset)


def _naive(value: str, *, last: bool) -> str | None:
    found = None
    for parameter in value.split(";")[1:]:
        name, _, given = parameter.partition("=")
        if name.strip().lower() == "charset":
            found = given.strip().strip('"').strip()
            if not last:
                return found
    return found


def _codec(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "unknown:" + name


@st.composite
def headers(draw: st.DrawFn) -> str:
    media = draw(st.sampled_from(["text/plain", "application/json", "TEXT/HTML", "image/png"]))
    parts = [media]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(NAMES))
        value = draw(st.sampled_from([*CHARSETS, "a;charset=cp500", "x y", "2"]))
        quoted = draw(st.booleans()) or not value or " " in value or ";" in value
        if name.endswith("*") and draw(st.booleans()):
            value = draw(st.sampled_from(["utf-8''", "''", "us-ascii'en'"])) + value
        shown = '"' + value + '"' if quoted else value
        space = draw(st.sampled_from(SPACES))
        parts.append(f"{space}{name}={shown}")
    junk = draw(st.sampled_from(["", "", "", ";", "; ", ";;", ", text/html", " junk"]))
    return ";".join(parts) + junk


@settings(max_examples=600)
@given(headers())
@example("text/plain; charset=cp500; charset=utf-8")
@example("text/plain; charset*=''cp500")
@example('text/plain; a="x;charset=cp500"; charset=utf-8')
def test_a_header_is_refused_or_read_alike_by_every_reader(value: str) -> None:
    try:
        parsed = parse_content_type([value])
    except AmbiguousContentType as error:
        refusal = str(error)
        parsed = None
    if parsed is None:
        assert value not in refusal  # never echoes the header
        return
    readings = {
        _codec(_email_charset(value)),
        _codec(_naive(value, last=False)),
        _codec(_naive(value, last=True)),
    }
    assert readings == {parsed.charset}
    canonical = parsed.as_utf8()
    assert _email_charset(canonical) == "utf-8"
    assert _naive(canonical, last=False) == _naive(canonical, last=True) == "utf-8"
    assert parse_content_type([canonical]).charset == "utf-8"


@pytest.mark.parametrize(
    "value",
    [
        "text/plain; charset=cp500; charset=utf-8",
        "text/plain;charset=cp500;CHARSET=utf-8",
        "text/plain; charset*=utf-8''cp500",
        "text/plain; CHARSET*0=cp500",
        "text/plain; charset=bogus",
        "text/plain; charset=base64",
        "text/plain; charset=",
        'text/plain; charset=""',
        "text/plain, text/html",
        "text/plain; charset",
        "text/plain; charset=utf-8 x",
        "text",
    ],
)
def test_ambiguous_headers_are_refused(value: str) -> None:
    with pytest.raises(AmbiguousContentType):
        parse_content_type([value])


def test_two_content_type_fields_are_refused() -> None:
    with pytest.raises(AmbiguousContentType, match="more than one Content-Type"):
        parse_content_type(["text/plain", "text/plain"])


KEY = "ag_at_" + "Abc123" * 8 + "x"


def _xml(encoding: str) -> bytes:
    return f'<?xml version="1.0" encoding="{encoding}"?><a>{KEY}</a>'.encode(encoding)


@pytest.mark.parametrize(
    ("header", "body", "expected"),
    [
        ("text/plain", b"\xff\xfe" + KEY.encode("utf-16-le"), "utf-16"),
        ("application/json", json.dumps({"k": KEY}).encode("utf-16-le"), "utf-16-le"),
        ("application/json", json.dumps({"k": KEY}).encode("utf-32-be"), "utf-32-be"),
        ("application/xml", _xml("cp500"), "cp500"),
        ("application/xml", _xml("utf-16-le"), "utf-16-le"),
        ("text/xml", _xml("cp037"), "cp037"),
        ("", b'<html><meta charset="cp500">' + KEY.encode("cp500"), "cp500"),
        (
            "text/html",
            b'<meta http-equiv="content-type" content="text/html; charset=utf-7">',
            "utf_7",
        ),
        ("text/html; charset=cp500", '<meta charset="cp500">'.encode("cp500"), "cp500"),
        ("application/json; charset=utf-8", b'{"k": 1}', None),
        ("image/png", b'<meta charset="cp500">', None),
    ],
)
def test_the_body_reading_follows_mark_header_declaration_sniffing(
    header: str, body: bytes, expected: str | None
) -> None:
    chosen = body_encoding(parse_content_type([header] if header else []), body)
    assert _codec(chosen) == _codec(expected)


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ("application/xml; charset=utf-8", _xml("cp500")),
        ("text/html; charset=utf-8", b'<meta charset="cp500">' + KEY.encode("cp500")),
        ("application/json; charset=utf-8", json.dumps({"k": KEY}).encode("utf-16-le")),
    ],
)
def test_a_body_declaring_another_charset_than_its_header_is_refused(
    header: str, body: bytes
) -> None:
    with pytest.raises(ConflictingCharsets):
        body_encoding(parse_content_type([header]), body)


def test_a_reencoded_body_declares_utf8_and_other_declarations_are_refused() -> None:
    head = b'<?xml version="1.0" encoding="cp500"?><html><meta charset=cp500>'
    rewritten = declare_utf8_in_body(head)
    assert rewritten == b'<?xml version="1.0" encoding="utf-8"?><html><meta charset=utf-8>'
    check_declarations(rewritten)
    check_declarations(b'<meta charset="iso-8859-1">')  # reads ASCII as UTF-8 does
    check_declarations(b'<meta charset="{{ charset }}">')  # no codec: readers ignore it
    check_declarations(b'{"page": "<meta charset=\\"utf-8\\">"}')  # escaped in JSON
    assert body_encoding(ContentType("text/html"), b'<meta charset="no-such-codec">') is None
    with pytest.raises(ConflictingCharsets):
        check_declarations(b'{"html": "<meta charset=\\"utf-7\\">"}')


def test_the_canonical_header_keeps_other_parameters() -> None:
    parsed = ContentType("application/json", "cp500", (("v", "2"), ("q", "a b")))
    assert parsed.as_utf8() == 'application/json; v=2; q="a b"; charset=utf-8'


def test_the_codecs_read_alike_for_ascii_make_ascii_only_from_ascii_bytes() -> None:
    from agentguard._body_charset import _ASCII_TRANSPARENT

    for name in _ASCII_TRANSPARENT:
        assert codecs.lookup(name).name == name
        assert bytes(range(128)).decode(name) == bytes(range(128)).decode("ascii")
        for byte in range(128, 256):
            for pair in (bytes([byte]), bytes([byte, 0x41]), bytes([0x41, byte])):
                text = pair.decode(name, "replace")
                assert sum(ch.isascii() for ch in text) == sum(b < 128 for b in pair), name
