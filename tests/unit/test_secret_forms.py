"""Issue 14, item 2: every encoded form of a secret, at every offset, is found by both scanners.

The properties draw a random secret, a random blob around it (so the secret lands at a random
offset, hence every base64 alignment), and a random encoding from the list below; the proxy's
:class:`EchoScanner` and the :class:`SecretLeakReviewer` must both find it, whole and streamed in
random chunks, and a streamed scan must never release bytes that reveal it.

``AGENTGUARD_ECHO_EXAMPLES`` sets the cases per property (default 300).
"""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentguard._secret import (
    FRAGMENT,
    MIN_ENCODED,
    MIN_FRAGMENT,
    base64_cores,
    encoded_forms,
    fragment_length,
)
from agentguard._secret_match import SecretMatcher, text_views, unescape_json
from agentguard._secret_views import STEP
from agentguard.credentials import EchoScanner, SecretEchoed
from agentguard.review import (
    Direction,
    Outcome,
    ReviewBlocked,
    ReviewChain,
    ReviewContext,
    SecretLeakReviewer,
)
from agentguard.review._chain import decode_body

pytestmark = pytest.mark.anyio

EXAMPLES = int(os.environ.get("AGENTGUARD_ECHO_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OUT = ReviewContext(Direction.OUT, "GET", "/x", "application/json")

# (text before, secret, text after, bytes before, bytes after) -> the body
Carrier = Callable[[str, str, str, bytes, bytes], bytes]


def _b64(data: bytes, *, url: bool = False, pad: bool = True) -> bytes:
    encoded = base64.urlsafe_b64encode(data) if url else base64.b64encode(data)
    return encoded if pad else encoded.rstrip(b"=")


def _escape_every_unit(text: str) -> str:
    wide = text.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{wide[i] << 8 | wide[i + 1]:04x}" for i in range(0, len(wide), 2))


def _wrap(text: str, width: int, separator: str) -> str:
    return separator.join(text[i : i + width] for i in range(0, len(text), width))


def _blob(before: bytes, secret: str, after: bytes) -> bytes:
    return before + secret.encode("utf-8") + after


CARRIERS: dict[str, Carrier] = {
    "raw": lambda bt, s, at, bb, ab: (bt + s + at).encode(),
    "base64": lambda bt, s, at, bb, ab: _b64(_blob(bb, s, ab)),
    "base64-unpadded": lambda bt, s, at, bb, ab: _b64(_blob(bb, s, ab), pad=False),
    "base64url": lambda bt, s, at, bb, ab: _b64(_blob(bb, s, ab), url=True),
    "base64url-unpadded": lambda bt, s, at, bb, ab: _b64(_blob(bb, s, ab), url=True, pad=False),
    "base64-mime": lambda bt, s, at, bb, ab: base64.encodebytes(_blob(bb, s, ab)),
    "base64-mime-in-json": lambda bt, s, at, bb, ab: json.dumps(
        {"attachment": base64.encodebytes(_blob(bb, s, ab)).decode()}
    ).encode(),
    "basic-auth-header": lambda bt, s, at, bb, ab: b"Basic " + _b64(bb + b":" + s.encode()),
    "hex": lambda bt, s, at, bb, ab: _blob(bb, s, ab).hex().encode(),
    "HEX": lambda bt, s, at, bb, ab: _blob(bb, s, ab).hex().upper().encode(),
    "percent": lambda bt, s, at, bb, ab: quote(_blob(bb, s, ab), safe="").encode(),
    "percent-every-byte": lambda bt, s, at, bb, ab: "".join(
        f"%{b:02x}" for b in _blob(bb, s, ab)
    ).encode(),
    "json": lambda bt, s, at, bb, ab: json.dumps({"k": bt + s + at}).encode(),
    "json-utf8": lambda bt, s, at, bb, ab: json.dumps([bt + s + at], ensure_ascii=False).encode(),
    "json-every-unit-escaped": lambda bt, s, at, bb, ab: (
        '{"k": "' + _escape_every_unit(bt + s + at) + '"}'
    ).encode(),
    "json-slashes-escaped": lambda bt, s, at, bb, ab: (
        json.dumps(_b64(_blob(bb, s, ab)).decode()).replace("/", "\\/").encode()
    ),
    "percent-of-json-escapes": lambda bt, s, at, bb, ab: quote(
        _escape_every_unit(s), safe=""
    ).encode(),
    "json-escaped-percent": lambda bt, s, at, bb, ab: _escape_every_unit(
        "".join(f"%{b:02X}" for b in s.encode())
    ).encode(),
    # Width and indentation vary with the generated text around the secret.
    "base64-wrapped-indented": lambda bt, s, at, bb, ab: _wrap(
        _b64(_blob(bb, s, ab)).decode(), 4 + len(bt) % 77, "\n" + " \t"[len(at) % 2] * (len(at) % 9)
    ).encode(),
    "base64-space-groups": lambda bt, s, at, bb, ab: _wrap(
        _b64(_blob(bb, s, ab)).decode(), 4, " "
    ).encode(),
}


def _wide(codec: str) -> Carrier:
    return lambda bt, s, at, bb, ab: (bt + s + at).encode(codec)


# Read as UTF-8 by the scanners (no charset known): ASCII secrets only, found with NULs removed.
WIDE: dict[str, Carrier] = {
    "utf-16-le": _wide("utf-16-le"),
    "utf-16-be": _wide("utf-16-be"),
    "utf-16-bom": _wide("utf-16"),
    "utf-32-le": _wide("utf-32-le"),
    "utf-32-be": _wide("utf-32-be"),
}

ASCII_SECRET = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.~+/=:!@#$%^&*()[]{}\"'\\ ",
    min_size=MIN_ENCODED,
    max_size=72,
)
ANY_SECRET = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc")), min_size=MIN_ENCODED, max_size=48
)
AROUND = st.tuples(
    st.text(max_size=40), st.text(max_size=40), st.binary(max_size=40), st.binary(max_size=40)
)


async def _both_find(body: bytes, secret: str) -> None:
    assert EchoScanner([secret]).found_in(body)
    verdict = await SecretLeakReviewer(secrets=[secret]).review(OUT, decode_body(body))
    assert verdict.outcome is Outcome.BLOCK


@SETTINGS
@given(ASCII_SECRET, AROUND, st.sampled_from(sorted({**CARRIERS, **WIDE})))
async def test_any_form_at_any_offset_is_found_by_both_scanners(
    secret: str, around: tuple[str, str, bytes, bytes], carrier: str
) -> None:
    before_text, after_text, before, after = around
    body = {**CARRIERS, **WIDE}[carrier](before_text, secret, after_text, before, after)
    await _both_find(body, secret)


@SETTINGS
@given(ANY_SECRET, AROUND, st.sampled_from(sorted(CARRIERS)))
async def test_any_form_of_a_unicode_secret_is_found_by_both_scanners(
    secret: str, around: tuple[str, str, bytes, bytes], carrier: str
) -> None:
    before_text, after_text, before, after = around
    body = CARRIERS[carrier](before_text, secret, after_text, before, after)
    await _both_find(body, secret)


def _chunks(body: bytes, sizes: list[int]) -> list[bytes]:
    out, position, index = [], 0, 0
    while position < len(body):
        size = sizes[index % len(sizes)]
        out.append(body[position : position + size])
        position += size
        index += 1
    return out


@SETTINGS
@given(
    ASCII_SECRET,
    AROUND,
    st.sampled_from(sorted({**CARRIERS, **WIDE})),
    st.lists(st.integers(1, 97), min_size=1, max_size=12),
)
def test_a_streamed_form_is_caught_before_any_revealing_byte_is_released(
    secret: str, around: tuple[str, str, bytes, bytes], carrier: str, sizes: list[int]
) -> None:
    before_text, after_text, before, after = around
    body = {**CARRIERS, **WIDE}[carrier](before_text, secret, after_text, before, after)
    scanner = EchoScanner([secret])
    stream = scanner.stream()
    released = bytearray()

    def feed_all() -> None:
        for chunk in _chunks(body, sizes):
            released.extend(stream.feed(chunk))
        released.extend(stream.finish())

    with pytest.raises(SecretEchoed):
        feed_all()
    assert not scanner.found_in(bytes(released))
    assert body.startswith(bytes(released))


@SETTINGS
@given(
    ASCII_SECRET,
    AROUND,
    st.sampled_from(sorted({**CARRIERS, **WIDE})),
    st.lists(st.integers(1, 97), min_size=1, max_size=12),
)
async def test_a_streamed_form_is_blocked_by_the_reviewer_chain(
    secret: str, around: tuple[str, str, bytes, bytes], carrier: str, sizes: list[int]
) -> None:
    before_text, after_text, before, after = around
    body = {**CARRIERS, **WIDE}[carrier](before_text, secret, after_text, before, after)
    chain = ReviewChain([SecretLeakReviewer(secrets=[secret], shapes={})])
    stream = chain.stream(OUT)
    released = bytearray()

    async def feed_all() -> None:
        for chunk in _chunks(body, sizes):
            released.extend(await stream.feed(chunk))
        released.extend(await stream.finish())

    with pytest.raises(ReviewBlocked):
        await feed_all()
    assert not EchoScanner([secret]).found_in(bytes(released))


@SETTINGS
@given(st.binary(min_size=1, max_size=64), st.binary(max_size=8), st.binary(max_size=8))
def test_base64_cores_sit_inside_the_blob_at_their_alignment(
    raw: bytes, before: bytes, after: bytes
) -> None:
    core = base64_cores(raw)[len(before) % 3]
    for encoded in (_b64(before + raw + after), _b64(before + raw + after, pad=False)):
        assert core in encoded.decode()
    url = core.translate(str.maketrans("+/", "-_"))
    assert url in _b64(before + raw + after, url=True, pad=False).decode()


@SETTINGS
@given(st.text())
def test_json_unescaping_reads_what_a_json_parser_reads(text: str) -> None:
    for encoded in (json.dumps(text), json.dumps(text, ensure_ascii=False)):
        assert unescape_json(encoded[1:-1]) == text
    every = _escape_every_unit(text)
    assert unescape_json(every) == json.loads(f'"{every}"')


@SETTINGS
@given(ASCII_SECRET, AROUND, st.sampled_from(sorted(CARRIERS)), st.integers(0, 10_000))
def test_holdback_keeps_every_beginning_of_a_match(
    secret: str, around: tuple[str, str, bytes, bytes], carrier: str, cut_at: int
) -> None:
    """Whatever the cut, the held-back tail plus the rest still shows the secret."""
    before_text, after_text, before, after = around
    text = CARRIERS[carrier](before_text, secret, after_text, before, after).decode(
        "utf-8", "surrogateescape"
    )
    matcher = SecretMatcher([secret])
    cut = cut_at % (len(text) + 1)
    head = text[:cut]
    assume(matcher.find(head) is None)
    keep = matcher.holdback(head)
    assert matcher.find(head[len(head) - keep :] + text[cut:]) is not None


def test_the_length_policy() -> None:
    assert (MIN_ENCODED, MIN_FRAGMENT, FRAGMENT) == (8, 16, 12)
    assert [fragment_length(n) for n in (7, 15, 16, 19, 23, 24, 64)] == [
        None,
        None,
        8,
        9,
        11,
        12,
        12,
    ]
    assert encoded_forms("s3cr3t!") == {"s3cr3t!"}  # under 8: the raw value only
    eight = encoded_forms("s3cr3t!x")
    assert b"s3cr3t!x".hex() in eight
    assert not any(len(form) < 8 for form in eight)  # no fragments under 16
    twenty = "k" * 4 + "0123456789abcdef"
    assert {twenty[:10], twenty[-10:]} <= encoded_forms(twenty)


def test_a_secret_cut_in_two_anywhere_is_found_through_its_longer_piece() -> None:
    for size in (16, 17, 23, 24, 40):
        secret = "".join(string.ascii_letters[(7 * i) % 52] for i in range(size))
        scanner = EchoScanner([secret])
        for cut in range(size + 1):
            left, right = secret[:cut], secret[cut:]
            assert scanner.found_in(f"a {left} | b {right}".encode()), (size, cut)


def test_views_undo_one_layer_or_two() -> None:
    views = list(text_views("a%5Cu0073b \\u002573 \x00x\x00"))
    assert views[0] == "a%5Cu0073b \\u002573 \x00x\x00"
    assert any("asb s" in view for view in views)
    assert any(view.endswith(" x") for view in views)


def test_plain_text_is_held_back_little_escaped_text_enough() -> None:
    secret = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
    matcher = SecretMatcher([secret])
    plain = "x" * 5000
    assert matcher.holdback(plain) == matcher.longest - 1 + 12
    escaped = _escape_every_unit("y" * 1000)
    assert matcher.holdback(escaped) >= 6 * matcher.longest
    assert matcher.holdback(escaped) <= matcher.span


def test_header_names_are_matched_in_any_case() -> None:
    secret = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
    scanner = EchoScanner([secret])
    with pytest.raises(SecretEchoed):
        scanner.check_headers([(secret.lower().encode(), b"1")])
    with pytest.raises(SecretEchoed):
        scanner.check_headers([(b"x-" + base64.b64encode(secret.encode()).lower(), b"1")])
    scanner.check_headers([(b"x-request-id", b"r-1")])


def test_innocent_data_is_not_flagged() -> None:
    secret = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
    scanner = EchoScanner([secret])
    reviewer_view = SecretMatcher([secret], min_length=8)
    body = json.dumps(
        {
            "thumb": base64.b64encode(bytes(range(256)) * 8).decode(),
            "escaped": _escape_every_unit("crm-live- is our prefix, nothing else"),
            "hex": bytes(range(256)).hex(),
            "url": quote("https://example.test/a b?c=d&e=crm-live", safe=""),
        }
    ).encode()
    assert not scanner.found_in(body)
    assert reviewer_view.find(decode_body(body)) is None


def test_binary_data_is_searched_raw_and_without_nuls() -> None:
    secret = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
    scanner = EchoScanner([secret])
    noise = bytes(range(128, 256)) * 64
    assert scanner.found_in(noise + secret.encode() + noise)
    assert scanner.found_in(noise + secret.encode("utf-16-le") + noise)
    assert not scanner.found_in(noise + b"\\u0063" * 40 + noise)


@pytest.mark.parametrize(
    "text", ["%\ud800", '{"k": "%\\ud800', "\ud800\udc80%41\x00\\u0041", "\udfff" * 9000]
)
def test_lone_surrogates_never_break_the_views(text: str) -> None:
    """A window can cut a ``\\ud800\\udc00`` escape in two; a reviewer may get any str."""
    matcher = SecretMatcher(["crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"])
    assert matcher.find(text) is None
    views = list(text_views(text))
    assert views[0] == text


WHITESPACE = st.text(alphabet=" \t\r\n\x0b\x0c", min_size=1, max_size=8)


@SETTINGS
@given(
    ASCII_SECRET,
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.integers(1, 80),
    WHITESPACE,
    st.sampled_from(["base64", "base64url", "hex"]),
)
async def test_encoded_blob_wrapped_with_any_whitespace_is_found(  # noqa: PLR0917
    secret: str, before: bytes, after: bytes, width: int, separator: str, encoding: str
) -> None:
    """F2: base64 (any alignment: the bytes before vary) or hex, wrapped at any width with any
    whitespace after each piece (indentation, spaces between groups, CRLF): a decoder that
    skips characters outside its alphabet reads the secret, so the scanners find it."""
    blob = _blob(before, secret, after)
    encoded = {
        "base64": _b64(blob).decode(),
        "base64url": _b64(blob, url=True, pad=False).decode(),
        "hex": blob.hex(),
    }[encoding]
    wrapped = _wrap(encoded, width, separator)
    joined = "".join(wrapped.split())  # what a decoder that skips whitespace reads
    decoded = {
        "base64": lambda: base64.b64decode(wrapped),  # Python's default skips it too
        "base64url": lambda: base64.urlsafe_b64decode(joined + "=" * (-len(joined) % 4)),
        "hex": lambda: bytes.fromhex(joined),
    }[encoding]()
    assert secret.encode() in decoded
    await _both_find(f"data: |\n  {wrapped}\n".encode(), secret)


LAYERS: dict[str, Callable[[str], str]] = {
    "json-every-unit": _escape_every_unit,
    "json": lambda text: json.dumps(text)[1:-1],
    "percent-every-byte": lambda text: "".join(f"%{b:02X}" for b in text.encode()),
    "percent": lambda text: quote(text, safe=""),
}


@SETTINGS
@given(ASCII_SECRET, AROUND, st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=3))
async def test_json_and_percent_layers_in_any_order_are_undone(
    secret: str, around: tuple[str, str, bytes, bytes], layers: list[str]
) -> None:
    """F4b: JSON escapes and percent-encoding stacked in any order, up to three layers (each
    ``%XX`` of a percent-encoded key ``\\u``-escaped, or each ``\\u`` escape percent-encoded,
    or a JSON document inside a JSON string)."""
    before_text, after_text, _, _ = around
    text = before_text + secret + after_text
    for layer in layers:
        text = LAYERS[layer](text)
    assert SecretMatcher([secret]).find(text) == secret
    verdict = await SecretLeakReviewer(secrets=[secret], shapes={}).review(OUT, text)
    assert verdict.outcome is Outcome.BLOCK


async def _no_pause() -> None:
    return None


MARKED_TEXT = st.text(alphabet=st.sampled_from(list("ab%5Cu0041\\/\x00 \n\tQUJD=")), max_size=200)


@SETTINGS
@given(ASCII_SECRET, MARKED_TEXT, MARKED_TEXT, st.sampled_from(sorted(CARRIERS)))
async def test_the_stepwise_search_finds_what_the_whole_search_finds(
    secret: str, before: str, after: str, carrier: str
) -> None:
    """Differential: the reviewer's stepwise search against the scanners' synchronous one,
    on text full of every view's markers around an encoded secret (or none)."""
    matcher = SecretMatcher([secret])
    body = CARRIERS[carrier]("", secret, "", b"", b"").decode("utf-8", "surrogateescape")
    for text in (before + after, before + body + after):
        assert await matcher.find_stepwise(text, _no_pause) == matcher.find(text)
    assert matcher.find(before + body + after) == secret


@pytest.mark.parametrize("shift", [-100, -40, -1, 0, 1, 30, 60, 100])
async def test_a_form_across_a_step_boundary_is_found_stepwise(shift: int) -> None:
    """Matching slices overlap by the longest form, so a form cut by a slice edge is seen."""
    secret = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
    matcher = SecretMatcher([secret])
    for form in (secret, base64.b64encode(secret.encode()).decode(), secret.encode().hex()):
        text = "x" * (STEP + shift) + form + "y" * STEP
        pauses = 0

        async def pause() -> None:
            nonlocal pauses
            pauses += 1

        assert await matcher.find_stepwise(text, pause) == secret
        assert await matcher.find_stepwise(text.replace(form, "z" * len(form)), pause) is None
        assert pauses >= 2  # the clean text is searched in slices


def test_whitespace_view_removes_every_kind_of_whitespace() -> None:
    views = list(text_views("QUJD\n  RA==\r\n\tx y\\nz\u00a0w"))
    assert "QUJDRA==xyzw" in views


@SETTINGS
@given(ASCII_SECRET, st.lists(st.integers(0, 3 * STEP), min_size=1, max_size=6))
async def test_redaction_finds_the_same_forms_stepwise(secret: str, places: list[int]) -> None:
    """Differential: the reviewer's stepwise collection of the forms to redact against the
    whole-text one, with forms placed anywhere (across slice edges too)."""
    matcher = SecretMatcher([secret], min_length=8)
    forms = sorted(matcher.forms)
    text = "x" * (3 * STEP)
    for index, place in enumerate(sorted(places, reverse=True)):
        text = text[:place] + forms[index % len(forms)] + text[place:]
    assert await matcher.forms_in_stepwise(text, _no_pause) == matcher.forms_in(text)
    assert matcher.forms_in(text)


@pytest.mark.parametrize("before", ["\\", "x\\", '"\\', "\\\\\\\\"])
@pytest.mark.parametrize("secret", [":%000000", "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"])
def test_a_backslash_before_json_escaped_percent_encoding_hides_nothing(
    before: str, secret: str
) -> None:
    """Found at scale: a backslash pairs with the first ``\\u`` escape, so the secret is reached
    by JSON, JSON, then percent decoding, a sequence the alternating chains did not take."""
    percent = "".join(f"%{byte:02X}" for byte in secret.encode())
    escaped = "".join(f"\\u{ord(char):04x}" for char in percent)
    matcher = SecretMatcher([secret])
    assert matcher.find(before + escaped) == secret
    assert matcher.find(before + escaped + "tail") == secret
