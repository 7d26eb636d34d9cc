from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.credentials import EchoScanner, SecretEchoed, secret_forms

SECRET = "sk-live-0123456789abcdefghijklmnop"


@pytest.mark.parametrize(
    "carrier",
    [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        json.dumps({"k": SECRET}),
        "key=sk-live-0123",
        "...klmnop and 56789abcdefghijklmnop",
    ],
)
def test_forms_are_found(carrier: str) -> None:
    assert EchoScanner([SECRET]).found_in(f"before {carrier} after".encode())


def test_innocent_text_is_not_flagged() -> None:
    scanner = EchoScanner([SECRET])
    assert not scanner.found_in(b'{"contacts": ["Ada", "Grace"], "sk": "live"}')


def test_short_secret_has_no_fragment_forms() -> None:
    assert all(len(form) >= 10 for form in secret_forms("short-secret"))


def test_headers_are_checked() -> None:
    scanner = EchoScanner([SECRET])
    scanner.check_headers([(b"x-ok", b"fine")])
    with pytest.raises(SecretEchoed):
        scanner.check_headers([(b"x-debug", SECRET.encode())])


@given(
    st.binary(max_size=300),
    st.binary(max_size=300),
    st.lists(st.integers(1, 64), min_size=1, max_size=40),
)
def test_any_chunking_finds_the_secret(before: bytes, after: bytes, sizes: list[int]) -> None:
    body = before + SECRET.encode() + after
    stream = EchoScanner([SECRET]).stream()
    released = bytearray()

    def feed_all() -> None:
        position, index = 0, 0
        while position < len(body):
            size = sizes[index % len(sizes)]
            released.extend(stream.feed(body[position : position + size]))
            position += size
            index += 1
        released.extend(stream.finish())

    with pytest.raises(SecretEchoed):
        feed_all()
    assert SECRET.encode() not in released
    assert SECRET[:12].encode() not in released


@given(st.binary(max_size=2000), st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_clean_bodies_pass_through_unchanged(body: bytes, sizes: list[int]) -> None:
    scanner = EchoScanner([SECRET])
    if scanner.found_in(body):
        return
    stream = scanner.stream()
    out, position, index = b"", 0, 0
    while position < len(body):
        size = sizes[index % len(sizes)]
        out += stream.feed(body[position : position + size])
        position += size
        index += 1
    assert out + stream.finish() == body


@pytest.mark.parametrize("size", [16, 20, 23])
def test_keys_under_24_characters_get_partial_matches(size: int) -> None:
    key = SECRET[:size]
    half = size // 2
    scanner = EchoScanner([key])
    assert scanner.found_in(f"Incorrect API key provided: {key[:half]}...".encode())
    assert scanner.found_in(f"Incorrect API key provided: ...{key[-half:]}".encode())
    assert not scanner.found_in(f"Incorrect API key provided: {key[: half - 1]}...".encode())


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_base64_inside_a_larger_blob_is_found_at_each_alignment(shift: int) -> None:
    blob = b"\x00\xff"[:shift] + SECRET.encode() + b"; more"
    scanner = EchoScanner([SECRET])
    for encoded in (base64.b64encode(blob), base64.urlsafe_b64encode(blob).rstrip(b"=")):
        assert scanner.found_in(b"Basic " + encoded)


def test_a_key_in_a_header_name_is_found() -> None:
    with pytest.raises(SecretEchoed):
        EchoScanner([SECRET]).check_headers([(b"x-" + SECRET.encode(), b"1")])


def test_utf16_and_escaped_bodies_are_read_as_the_agent_reads_them() -> None:
    scanner = EchoScanner([SECRET])
    document = json.dumps({"error": SECRET})
    assert scanner.found_in(document.encode("utf-16"))
    assert scanner.found_in(document.encode("utf-32-be"))
    escaped = "".join(f"\\u{ord(c):04x}" for c in SECRET)
    assert scanner.found_in(('{"error": "' + escaped + '"}').encode())
    assert scanner.found_in("".join(f"%{b:02x}" for b in SECRET.encode()).encode())


def test_a_short_secret_is_matched_raw_only() -> None:
    assert secret_forms("abc1234") == {b"abc1234"}
    assert EchoScanner(["abc1234"]).found_in(b"x abc1234 y")
    assert not EchoScanner(["abc1234"]).found_in(base64.b64encode(b"abc1234"))


@pytest.mark.anyio
@pytest.mark.parametrize("filler", ["plain text ", "a\x00b\nc\\u0041%41d\\/"])
async def test_the_stepwise_body_check_pauses_and_agrees_with_the_whole_one(filler: str) -> None:
    secret = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
    scanner = EchoScanner([secret])
    body = (filler * (300_000 // len(filler))).encode()
    pauses = 0

    async def pause() -> None:
        nonlocal pauses
        pauses += 1

    await scanner.check_body_stepwise(body, pause)
    assert pauses >= 4
    hidden = body + base64.b64encode(b"\x01" + secret.encode()) + body
    with pytest.raises(SecretEchoed):
        scanner.check_body(hidden)
    with pytest.raises(SecretEchoed):
        await scanner.check_body_stepwise(hidden, pause)
