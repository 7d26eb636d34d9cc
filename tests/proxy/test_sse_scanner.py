"""The streamed echo scan's sliding window: what it holds back, and that it still sees every form.

:meth:`EchoScanner.holdback` keeps only the tail that could begin a form of a secret. Bound:
in text without whitespace, NULs, backslashes or percent signs, at most the longest form minus
one byte; always within :meth:`SecretMatcher.holdback`. Soundness: whatever the cut, the
held-back tail plus the rest of the body still shows the secret, so every form (and every
carrier of the echo tests) split across any chunk boundaries is caught before any of it is
released.
"""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentguard.credentials import EchoScanner, SecretEchoed
from tests.unit.test_secret_forms import AROUND, ASCII_SECRET, CARRIERS, WIDE

EXAMPLES = int(os.environ.get("AGENTGUARD_ECHO_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PLAIN = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.~+/=:!@#$^&*()[]{}\"',;<>?|`", max_size=600
)
SIZES = st.lists(st.integers(1, 97), min_size=1, max_size=12)


def _chunks(body: bytes, sizes: list[int]) -> list[bytes]:
    out, position, index = [], 0, 0
    while position < len(body):
        size = sizes[index % len(sizes)]
        out.append(body[position : position + size])
        position += size
        index += 1
    return out


@SETTINGS
@given(ASCII_SECRET, PLAIN, SIZES)
def test_plain_text_is_held_back_at_most_the_longest_form_minus_one_byte(
    secret: str, text: str, sizes: list[int]
) -> None:
    scanner = EchoScanner([secret])
    body = text.encode()
    assume(not scanner.found_in(body))
    stream = scanner.stream()
    released = b""
    for index, chunk in enumerate(_chunks(body, sizes), 1):
        released += stream.feed(chunk)
        assert stream.held <= scanner.longest - 1  # the longest form searched, in bytes
        assert len(released) + stream.held == len(b"".join(_chunks(body, sizes)[:index]))
    assert released + stream.finish() == body


@SETTINGS
@given(ASCII_SECRET, st.data(), st.text(max_size=60), st.text(max_size=60), SIZES)
def test_every_form_split_across_any_chunk_boundaries_is_caught(
    secret: str, data: st.DataObject, before: str, after: str, sizes: list[int]
) -> None:
    scanner = EchoScanner([secret])
    form = data.draw(st.sampled_from(scanner.forms))
    body = (before + form.decode("utf-8", "surrogateescape") + after).encode(
        "utf-8", "surrogateescape"
    )
    stream = scanner.stream()
    released = bytearray()

    def feed_all() -> None:
        for chunk in _chunks(body, sizes):
            released.extend(stream.feed(chunk))
        released.extend(stream.finish())

    with pytest.raises(SecretEchoed):
        feed_all()
    assert form not in released
    assert not scanner.found_in(bytes(released))
    assert body.startswith(bytes(released))


@SETTINGS
@given(ASCII_SECRET, AROUND, st.sampled_from(sorted({**CARRIERS, **WIDE})), st.integers(0, 10**4))
def test_the_held_back_tail_keeps_every_beginning_of_a_match(
    secret: str, around: tuple[str, str, bytes, bytes], carrier: str, cut_at: int
) -> None:
    """Whatever the cut, the held-back tail plus the rest still shows the secret, and the tail
    is never longer than the matcher's own bound."""
    before_text, after_text, before, after = around
    body = {**CARRIERS, **WIDE}[carrier](before_text, secret, after_text, before, after)
    text = body.decode("utf-8", "surrogateescape")
    scanner = EchoScanner([secret])
    cut = cut_at % (len(text) + 1)
    head = text[:cut]
    assume(scanner.matcher.find(head) is None)
    keep = scanner.holdback(head)
    assert keep <= scanner.matcher.holdback(head)
    assert scanner.matcher.find(head[len(head) - keep :] + text[cut:]) is not None


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"n": 1}\n\n',
        b'data: {"delta": "caf\\u00e9 \\"quoted\\"\\nnext"}\n\n',
        b"event: ping\ndata: [DONE]\r\n\r\n",
        b": keep-alive\n\n",
    ],
)
def test_a_server_sent_event_ending_its_json_is_released_whole(event: bytes) -> None:
    stream = EchoScanner(["sk-live-" + "Q7f_2kLm" * 4]).stream()
    assert stream.feed(event) == event
    assert stream.held == 0


def test_an_escape_cut_at_the_end_is_held_whole() -> None:
    scanner = EchoScanner(["sk-live-" + "Q7f_2kLm" * 4])
    for tail in ("\\u00", "%E2%8", "%5Cu0", "\\"):
        assert scanner.holdback('{"a": "b"} ' + tail) >= len(tail)
