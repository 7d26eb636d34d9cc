"""The request-side key scan: every encoded form of any key shape, whole or streamed."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import KeyKind, generate_key
from agentguard._secret import encoded_forms
from agentguard.credentials._echo import secret_forms
from agentguard.credentials._keyscan import KeyInRequest, KeyScanner


def _b64(prefix: bytes, alphabet: Callable[[bytes], bytes], pad: bool) -> Callable[[str], str]:
    def encode(key: str) -> str:
        text = alphabet(prefix + key.encode()).decode()
        return text if pad else text.rstrip("=")

    return encode


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda key: key,
    "hex": lambda key: key.encode().hex(),
    "HEX": lambda key: key.encode().hex().upper(),
    "percent-every-byte": lambda key: "".join(f"%{byte:02x}" for byte in key.encode()),
    "percent-twice": lambda key: quote("".join(f"%{byte:02X}" for byte in key.encode())),
    "json-u-escapes": lambda key: "".join(f"\\u{ord(char):04X}" for char in key),
    "json-escaped-base64": lambda key: json.dumps(base64.b64encode(b"??" + key.encode()).decode())[
        1:-1
    ].replace("/", "\\/"),
    "mime-base64": lambda key: base64.encodebytes(b"\x00" * 40 + key.encode()).decode(),
}
for _align in range(3):
    for _name, _alphabet in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
        for _pad in (True, False):
            ENCODINGS[f"{_name}-{_align}-{'padded' if _pad else 'bare'}"] = _b64(
                b"\xff" * _align, _alphabet, _pad
            )


def _inner(align: int) -> Callable[[str], str]:
    """Only the base64 characters that the key's bytes alone determine, at one alignment."""

    def encode(key: str) -> str:
        text = base64.b64encode(b"\xff" * align + key.encode() + b"\xff\xff").decode()
        return text[-(-8 * align // 6) : 8 * (align + len(key)) // 6]

    return encode


for _align in range(3):
    ENCODINGS[f"b64-inner-{_align}"] = _inner(_align)


def _wrapped(width: int, separator: str) -> Callable[[str], str]:
    """base64 of the key at alignment 1, cut every ``width`` characters by ``separator``."""

    def encode(key: str) -> str:
        text = base64.b64encode(b"\xff" + key.encode()).decode()
        return separator.join(text[i : i + width] for i in range(0, len(text), width))

    return encode


ENCODINGS["json-escaped-percent"] = lambda key: "".join(
    "".join(f"\\u{ord(char):04x}" for char in f"%{byte:02X}") for byte in key.encode()
)
ENCODINGS["b64-yaml-indented"] = _wrapped(20, "\n    ")
ENCODINGS["b64-tab-indented"] = _wrapped(64, "\n\t")
ENCODINGS["b64-space-groups"] = _wrapped(4, " ")
ENCODINGS["b64-qp-soft-breaks"] = _wrapped(16, "=\r\n")

KINDS = st.sampled_from([KeyKind.ACCESS, KeyKind.REFRESH])
FILLER = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@given(
    kind=KINDS,
    encoding=st.sampled_from(sorted(ENCODINGS)),
    before=FILLER,
    after=FILLER,
    presented=st.booleans(),
)
def test_any_key_in_any_form_anywhere_is_found(
    kind: KeyKind, encoding: str, before: str, after: str, presented: bool
) -> None:
    key = generate_key(kind).reveal()
    scanner = KeyScanner([key] if presented else [generate_key(KeyKind.ACCESS).reveal()])
    data = (before + ENCODINGS[encoding](key) + after).encode()
    assert scanner.found_in(data)
    with pytest.raises(KeyInRequest) as refused:
        scanner.check(data, "body")
    assert key not in str(refused.value) and key not in repr(refused.value)
    assert refused.value.status == 400 and refused.value.code == "invalid_request"


@given(
    encoding=st.sampled_from(sorted(ENCODINGS)),
    before=st.binary(max_size=2000),
    after=st.binary(max_size=500),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8),
)
def test_a_streamed_key_is_found_across_any_chunk_boundaries(
    encoding: str, before: bytes, after: bytes, cuts: list[int]
) -> None:
    key = generate_key(KeyKind.REFRESH).reveal()
    data = before + ENCODINGS[encoding](key).encode() + after
    stream = KeyScanner().stream()
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]

    def feed_all() -> None:
        for start, end in itertools.pairwise(bounds):
            stream.feed(data[start:end])
        stream.finish()

    with pytest.raises(KeyInRequest):
        feed_all()


@given(st.lists(st.binary(max_size=400), max_size=6))
def test_a_body_without_a_key_streams_through_unchanged(chunks: list[bytes]) -> None:
    stream = KeyScanner([generate_key(KeyKind.ACCESS).reveal()]).stream()
    out = b"".join(stream.feed(chunk) for chunk in chunks) + stream.finish()
    assert out == b"".join(chunks)


KEY = generate_key(KeyKind.ACCESS).reveal()


@pytest.mark.parametrize("form", sorted(encoded_forms(KEY)))
def test_every_form_the_echo_scanner_knows_is_refused(form: str) -> None:
    assert KeyScanner([KEY]).found_in(b"note=" + form.encode("utf-8", "surrogateescape"))


# Bytes around a form: anything, or what can merge with it (base64 and hex alphabets, escapes).
AROUND = st.one_of(
    st.binary(max_size=120),
    st.text(alphabet="0123456789abcdefABCDEF+/=_-%\\u \n\r\t\x00", max_size=80).map(str.encode),
)


@given(kind=KINDS, index=st.integers(min_value=0), before=AROUND, after=AROUND)
def test_every_form_of_a_presented_key_is_found_whatever_bytes_surround_it(
    kind: KeyKind, index: int, before: bytes, after: bytes
) -> None:
    # The scanner searches only a well-formed key's fragments as strings and leaves its whole
    # encodings to the key-shape scans: this checks that nothing the echo scanner's forms would
    # find slips through, whatever surrounds the form.
    key = generate_key(kind).reveal()
    forms = sorted(secret_forms(key))
    form = forms[index % len(forms)]
    assert KeyScanner([key]).found_in(before + form + after)


@pytest.mark.parametrize(
    "presented", ["vendor-token-0123456789abcdef", "ag_at_malformed-key-value"]
)
def test_a_presented_string_that_is_no_key_is_searched_in_its_every_form(presented: str) -> None:
    scanner = KeyScanner([presented])
    for form in secret_forms(presented):
        assert scanner.found_in(b"x=" + form + b"&y=1"), form


@pytest.mark.parametrize(
    "text",
    [
        b"ag_at_short",
        b"ag_xx_" + b"A" * 49,
        b'plain text, a JSON body {"a": [1, 2, 3]}',
        base64.b64encode(b"ag_at_" + b"!" * 49),
        b"ag_at_" + b"A" * 48 + b"-",
    ],
)
def test_what_is_not_a_key_passes(text: bytes) -> None:
    assert not KeyScanner().found_in(text)


CHARSETS = ["utf-16-le", "utf-16-be", "utf-16", "utf-32", "utf-32-be", "cp500", "cp037", "utf-7"]
LATIN = st.text(st.characters(max_codepoint=0xFF), max_size=300)  # what cp500 can encode


@given(
    kind=KINDS,
    charset=st.sampled_from(CHARSETS),
    form=st.sampled_from(["raw", "json-u-escapes", "percent-every-byte", "b64-1-padded"]),
    before=LATIN,
    after=LATIN,
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=8),
)
def test_a_key_in_a_declared_charset_is_found_before_any_of_it_is_released(  # noqa: PLR0917
    kind: KeyKind, charset: str, form: str, before: str, after: str, cuts: list[int]
) -> None:
    key = generate_key(kind).reveal()
    prefix = (before + " ").encode(charset)
    data = (
        prefix + (before + " " + ENCODINGS[form](key) + " " + after).encode(charset)[len(prefix) :]
    )
    scanner = KeyScanner()
    with pytest.raises(KeyInRequest):
        scanner.check_body(data, charset)
    stream = scanner.stream(charset)
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    released: list[bytes] = []

    def feed_all() -> None:
        for start, end in itertools.pairwise(bounds):
            released.append(stream.feed(data[start:end]))
        released.append(stream.finish())

    with pytest.raises(KeyInRequest):
        feed_all()
    assert len(b"".join(released)) <= len(prefix)  # nothing past the text before the key went out


@given(kind=KINDS, charset=st.sampled_from(["utf-16-le", "utf-16-be", "utf-32-le"]))
def test_a_key_among_nuls_is_found_without_a_declared_charset(kind: KeyKind, charset: str) -> None:
    key = generate_key(kind).reveal()
    assert KeyScanner().found_in(("note: " + key).encode(charset))


@given(LATIN, st.sampled_from(CHARSETS))
def test_a_clean_body_in_a_charset_streams_through_unchanged(text: str, charset: str) -> None:
    data = text.encode(charset)
    stream = KeyScanner([generate_key(KeyKind.ACCESS).reveal()]).stream(charset)
    half = len(data) // 2
    out = stream.feed(data[:half]) + stream.feed(data[half:]) + stream.finish()
    assert out == data


# check_request scans the target and the headers joined, in one pass: it must find whatever a
# scan of each part alone finds. Parts are drawn from the characters the decoders and the run
# finders act on, with keys in every known form cut in at random places (also across parts).
PART_TEXT = st.text(st.sampled_from("AZaz09+/_-=%\\u0041 \t:;,\"'ag_t"), max_size=60)


@st.composite
def request_parts(draw: st.DrawFn) -> tuple[list[bytes], str]:
    key = generate_key(draw(KINDS)).reveal()
    parts = draw(st.lists(PART_TEXT, min_size=1, max_size=7))
    for _ in range(draw(st.integers(0, 2))):
        form = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))](key)
        index = draw(st.integers(0, len(parts) - 1))
        at = draw(st.integers(0, len(parts[index])))
        parts[index] = parts[index][:at] + form + parts[index][at:]
    return [part.encode() for part in parts], key


@given(request_parts(), st.booleans())
def test_one_scan_of_a_request_finds_what_a_scan_of_each_part_finds(
    drawn: tuple[list[bytes], str], presented: bool
) -> None:
    parts, key = drawn
    scanner = KeyScanner([key] if presented else [])
    target, rest = parts[0], parts[1:]
    headers = list(zip(rest[::2], [*rest[1::2], b""][: len(rest[::2])], strict=True))
    alone = [part for part in [target, *itertools.chain(*headers)] if scanner.found_in(part)]
    joined = scanner.found_in(b"\n".join([target, *itertools.chain(*headers)]))
    assert joined or not alone, "a key one part holds went unseen by the joined scan"
    if not joined:
        scanner.check_request(target, headers)  # nothing anywhere: passes
        return
    with pytest.raises(KeyInRequest) as refused:
        scanner.check_request(target, headers)
    assert key not in str(refused.value)
    if scanner.found_in(target):
        assert "(in the URL)" in str(refused.value)
