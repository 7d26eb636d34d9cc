"""The key format as a contract, checked against an independent implementation of its spec.

The spec (``keys/format.py``): ``ag_at_`` or ``ag_rt_``, then a 256-bit number as 43 base62
digits (``0-9A-Za-z``, most significant first), then CRC32 of prefix+body as 6 base62 digits.
:func:`defect` below re-derives from that text which check a string fails, so every refusal is
asserted with the exact message a developer sees, not only as "malformed".
"""

from __future__ import annotations

import hashlib
import re
import string
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import KeyKind
from agentguard._keys._format import (
    KEY_LENGTH,
    PREFIXES,
    ParsedKey,
    _checksum_digits,
    generate_key,
    hash_key,
    looks_like_key,
    new_id,
    parse_key,
)
from agentguard.errors import MalformedKey, Reason

DIGITS = string.digits + string.ascii_uppercase + string.ascii_lowercase

#: The message of each check, in the order parse_key applies them.
MESSAGES = {
    "type": "the key must be a string",
    "length": "an agentguard key is exactly 55 characters long",
    "prefix": "an agentguard key starts with 'ag_at_' or 'ag_rt_'",
    "alphabet": "an agentguard key contains only base62 characters after its prefix",
    "range": "the key's random part is out of range",
    "checksum": "the key's checksum does not match; it was mistyped or truncated",
}
KINDS = {"ag_at_": KeyKind.ACCESS, "ag_rt_": KeyKind.REFRESH}


def to_base62(number: int, width: int) -> str:
    text = ""
    while number:
        number, digit = divmod(number, 62)
        text = DIGITS[digit] + text
    assert len(text) <= width, "the number does not fit"
    return text.rjust(width, "0")


def spec_key(prefix: str, number: int) -> str:
    head = prefix + to_base62(number, 43)
    return head + to_base62(zlib.crc32(head.encode()), 6)


def defect(value: object) -> str | None:
    """The first check of the spec that ``value`` fails, or ``None`` for a valid key."""
    if not isinstance(value, str):
        return "type"
    if len(value) != 55:
        return "length"
    if value[:6] not in KINDS:
        return "prefix"
    if any(char not in DIGITS for char in value[6:]):
        return "alphabet"
    if sum(DIGITS.index(char) * 62**i for i, char in enumerate(reversed(value[6:49]))) >= 2**256:
        return "range"
    if to_base62(zlib.crc32(value[:49].encode()), 6) != value[49:]:
        return "checksum"
    return None


def assert_refused_as(value: object, expected: str) -> None:
    with pytest.raises(MalformedKey) as refused:
        parse_key(value)
    assert (str(refused.value), refused.value.reason) == (MESSAGES[expected], Reason.MALFORMED_KEY)
    assert looks_like_key(value) is False  # type: ignore[arg-type]


prefixes = st.sampled_from(sorted(KINDS))
bodies = st.integers(min_value=0, max_value=2**256 - 1)
generated = st.sampled_from(list(KeyKind)).map(lambda kind: generate_key(kind).reveal())


def test_the_layout_constants_match_the_spec() -> None:
    assert KEY_LENGTH == 55
    assert PREFIXES == {KeyKind.ACCESS: "ag_at_", KeyKind.REFRESH: "ag_rt_"}


@given(prefixes, bodies)
def test_every_256_bit_body_with_its_checksum_is_a_key(prefix: str, number: int) -> None:
    key = spec_key(prefix, number)
    assert parse_key(key) == ParsedKey(KINDS[prefix], key)
    assert looks_like_key(key) is True


@pytest.mark.parametrize("prefix", sorted(KINDS))
@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0, None),
        (2**256 - 1, None),  # the largest body
        (2**256, "range"),  # 43 digits can hold it, 256 bits cannot
        (62**43 - 1, "range"),
    ],
)
def test_the_body_is_exactly_256_bits(prefix: str, number: int, expected: str | None) -> None:
    key = spec_key(prefix, number)
    if expected is None:
        assert parse_key(key).kind is KINDS[prefix]
    else:
        assert_refused_as(key, expected)


@given(generated)
def test_generated_keys_satisfy_the_spec(key: str) -> None:
    assert defect(key) is None
    assert parse_key(key) == ParsedKey(KINDS[key[:6]], key)


def test_generated_keys_are_unique_and_all_valid() -> None:
    # A body drawn from more than 256 bits would fall out of range about 2% of the time.
    keys = [generate_key(kind).reveal() for kind in KeyKind for _ in range(1500)]
    assert len(set(keys)) == len(keys)
    assert all(parse_key(key).kind is KINDS[key[:6]] for key in keys)


@given(generated, st.integers(0, KEY_LENGTH - 1), st.characters())
def test_every_single_character_substitution_is_refused(
    key: str, position: int, replacement: str
) -> None:
    corrupted = key[:position] + replacement + key[position + 1 :]
    if corrupted == key:
        return
    expected = defect(corrupted)
    assert expected is not None  # CRC32 catches every single-character change
    assert_refused_as(corrupted, expected)


@given(generated, st.integers(0, KEY_LENGTH - 2))
def test_every_adjacent_transposition_is_refused(key: str, position: int) -> None:
    swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
    if swapped == key:
        return
    expected = defect(swapped)
    assert expected is not None
    assert_refused_as(swapped, expected)


@given(generated, st.integers(0, KEY_LENGTH), st.text(min_size=1, max_size=3), st.booleans())
def test_insertions_and_deletions_are_refused_by_length(
    key: str, position: int, text: str, insert: bool
) -> None:
    edited = (
        key[:position] + text + key[position:] if insert else key[:position] + key[position + 1 :]
    )
    if len(edited) == len(key):
        return
    assert_refused_as(edited, "length")


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.binary(),
        st.lists(st.text()),
        st.text(),
        st.text(alphabet=DIGITS + "_-", min_size=55, max_size=55),
        st.builds(lambda p, rest: p + rest, prefixes, st.text(min_size=49, max_size=49)),
    )
)
def test_each_defect_has_its_own_message(value: object) -> None:
    expected = defect(value)
    if expected is None:  # a 1-in-2**32 checksum collision is a key
        assert parse_key(value).value == value
        return
    assert_refused_as(value, expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"ag_at_" + b"0" * 49, "type"),
        (None, "type"),
        ("", "length"),
        ("ag_at_" + "0" * 48, "length"),
        ("ag_at_" + "0" * 50, "length"),
        ("ag_xx_" + "0" * 49, "prefix"),
        ("AG_AT_" + "0" * 49, "prefix"),
        ("ag_at_" + "0" * 48 + "-", "alphabet"),
        ("ag_at_" + "0" * 48 + "\u0660", "alphabet"),  # ARABIC-INDIC ZERO is no base62 digit
        ("ag_at_" + "z" * 49, "range"),
        ("ag_at_" + "0" * 49, "checksum"),
    ],
)
def test_the_checks_apply_in_order(value: object, expected: str) -> None:
    assert defect(value) == expected
    assert_refused_as(value, expected)


def test_swapping_the_prefix_breaks_the_checksum() -> None:
    for kind, other in ((KeyKind.ACCESS, "ag_rt_"), (KeyKind.REFRESH, "ag_at_")):
        assert_refused_as(other + generate_key(kind).reveal()[6:], "checksum")


@given(generated)
def test_the_stored_hash_is_sha256_of_the_key_text(key: str) -> None:
    assert hash_key(key) == hashlib.sha256(key.encode()).digest()


@pytest.mark.parametrize("prefix", ["key", "fam", "cred", "ns"])
def test_ids_are_the_prefix_and_16_uniform_base62_characters(prefix: str) -> None:
    ids = [new_id(prefix) for _ in range(2000)]
    assert all(re.fullmatch(prefix + "_[0-9A-Za-z]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert set("".join(i[len(prefix) + 1 :] for i in ids)) == set(DIGITS)  # every digit is used


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_checksum_digits_are_the_crc_in_six_base62_digits(crc: int) -> None:
    assert _checksum_digits(crc) == to_base62(crc, 6)


@pytest.mark.parametrize("crc", [0, 1, 61, 62, 3843, 3844, 62**4 - 1, 62**4, 2**32 - 1])
def test_checksum_digits_at_each_digit_boundary(crc: int) -> None:
    assert _checksum_digits(crc) == to_base62(crc, 6)
