"""htu normalisation (RFC 9449 §4.3 check 9 via RFC 3986 §6.2.2-6.2.3), as notes/dpop.md lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.dpop import normalize_htu


@pytest.mark.parametrize(
    ("given_url", "expected"),
    [
        # scheme and host are case-insensitive (§6.2.2.1)
        ("HTTPS://API.Example.TEST/crm", "https://api.example.test/crm"),
        # the default port is dropped (§6.2.3), a non-default one kept
        ("https://api.example.test:443/crm", "https://api.example.test/crm"),
        ("http://api.example.test:80/crm", "http://api.example.test/crm"),
        ("https://api.example.test:8443/crm", "https://api.example.test:8443/crm"),
        ("https://api.example.test:/crm", "https://api.example.test/crm"),
        ("https://api.example.test:0443/crm", "https://api.example.test/crm"),
        # percent-encoded unreserved octets are decoded (§6.2.2.2): %7e and %7E are ~
        ("https://api.example.test/a%7ex", "https://api.example.test/a~x"),
        ("https://api.example.test/a%7Ex", "https://api.example.test/a~x"),
        ("https://api.example.test/%41%2d%5F%2E", "https://api.example.test/A-_."),
        # other percent-encodings keep their meaning, with uppercase hex (§6.2.2.1)
        ("https://api.example.test/a%2fb%20c", "https://api.example.test/a%2Fb%20c"),
        ("https://api.example.test/a%3a", "https://api.example.test/a%3A"),
        # dot segments are removed (§6.2.2.3), also when percent-encoded
        ("https://api.example.test/a/./b/../c", "https://api.example.test/a/c"),
        ("https://api.example.test/a/%2e%2E/c", "https://api.example.test/c"),
        ("https://api.example.test/../../a", "https://api.example.test/a"),
        ("https://api.example.test/a/b/..", "https://api.example.test/a/"),
        # empty path is / (§6.2.3); a non-empty trailing slash is kept
        ("https://api.example.test", "https://api.example.test/"),
        ("https://api.example.test/crm/", "https://api.example.test/crm/"),
        ("https://api.example.test/a//b", "https://api.example.test/a//b"),
        # query and fragment are not part of htu (RFC 9449 §4.2)
        ("https://api.example.test/crm?x=1#frag", "https://api.example.test/crm"),
        ("https://api.example.test#frag", "https://api.example.test/"),
        # characters a URI may not hold are percent-encoded as UTF-8
        ("https://api.example.test/a b", "https://api.example.test/a%20b"),
        ("https://api.example.test/caf\u00e9", "https://api.example.test/caf%C3%A9"),
        ("https://api.example.test/caf%c3%a9", "https://api.example.test/caf%C3%A9"),
        # IDNA host (UTS #46), IPv6 literal
        ("https://B\u00fccher.Example/", "https://xn--bcher-kva.example/"),
        ("https://[0:0::1]:8443/x", "https://[::1]:8443/x"),
        ("https://127.0.0.1/x", "https://127.0.0.1/x"),
        ("wss://api.example.test:443/ws", "wss://api.example.test/ws"),
    ],
)
def test_4_3_htu_normalisation_makes_equivalent_urls_equal(given_url: str, expected: str) -> None:
    assert normalize_htu(given_url) == expected


def test_4_3_htu_percent_encoded_slash_is_not_a_separator() -> None:
    assert normalize_htu("https://h.test/a%2Fb") != normalize_htu("https://h.test/a/b")


def test_4_3_htu_trailing_slash_is_significant() -> None:
    assert normalize_htu("https://h.test/crm/") != normalize_htu("https://h.test/crm")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("https://h.test/a", "https://h.test/b"),
        ("https://h.test/a", "https://g.test/a"),
        ("https://h.test/a", "http://h.test/a"),
        ("https://h.test/a", "https://h.test:8443/a"),
        ("https://h.test/A", "https://h.test/a"),
    ],
)
def test_4_3_htu_differs_for_different_path_host_scheme_or_port(one: str, other: str) -> None:
    assert normalize_htu(one) != normalize_htu(other)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/relative/path",
        "api.example.test/x",
        "ftp://api.example.test/x",
        "https:///x",
        "https://user:pw@api.example.test/x",
        "https://api.example.test:99999/x",
        "https://api.example.test:12a/x",
        "https://api.example.test/%zz",
        "https://api.example.test/%4",
        "https://exa mple.test/",
        "https://[::1/",
        "https://[fe80::1%25eth0]/",
        "https://\ud800.test/",
    ],
)
def test_4_3_htu_invalid_urls_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_htu(bad)


_host = st.from_regex(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\.[a-zA-Z]{2,6}){0,2}", fullmatch=True
)
_path = st.lists(
    st.sampled_from([*"abcXYZ019-._~!$&'()*+,;=:@/% é?#", "%2e", "%7E", "%2F", "..", "%41"]),
    max_size=30,
).map("".join)


@settings(max_examples=300)
@given(
    scheme=st.sampled_from(["http", "https", "HTTPS", "ws", "wss"]),
    host=_host,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    path=_path,
)
def test_4_3_htu_normalisation_is_idempotent(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}/{path}"
    try:
        once = normalize_htu(url)
    except ValueError:
        return
    assert normalize_htu(once) == once


@given(st.text(max_size=80))
def test_4_3_htu_arbitrary_text_only_raises_value_error(text: str) -> None:
    try:
        result = normalize_htu(text)
    except ValueError:
        return
    assert normalize_htu(result) == result
