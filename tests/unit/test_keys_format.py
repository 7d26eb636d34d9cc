from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import KeyKind
from agentguard._keys._format import (
    ALPHABET,
    KEY_LENGTH,
    generate_key,
    hash_key,
    looks_like_key,
    new_id,
    parse_key,
)
from agentguard.errors import MalformedKey, Reason


@pytest.mark.parametrize(
    ("kind", "prefix"), [(KeyKind.ACCESS, "ag_at_"), (KeyKind.REFRESH, "ag_rt_")]
)
def test_generated_key_has_prefix_length_and_parses(kind: KeyKind, prefix: str) -> None:
    key = generate_key(kind).reveal()
    assert key.startswith(prefix)
    assert len(key) == KEY_LENGTH == 55
    assert parse_key(key).kind is kind


def test_generated_keys_are_unique() -> None:
    keys = {generate_key(KeyKind.ACCESS).reveal() for _ in range(1000)}
    assert len(keys) == 1000


def test_body_carries_256_bits() -> None:
    # 43 base62 characters can hold any 256-bit number; the largest fits, one more does not.
    assert 62**43 > 2**256 > 62**42


def test_wrong_prefix_is_malformed() -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    with pytest.raises(MalformedKey, match="starts with"):
        parse_key("ag_xx_" + key[6:])


def test_wrong_length_is_malformed() -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    with pytest.raises(MalformedKey, match="exactly 55"):
        parse_key(key[:-1])
    with pytest.raises(MalformedKey, match="exactly 55"):
        parse_key(key + "A")


def test_single_character_typo_fails_checksum() -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    position = 20
    replacement = "A" if key[position] != "A" else "B"
    typo = key[:position] + replacement + key[position + 1 :]
    with pytest.raises(MalformedKey, match="checksum"):
        parse_key(typo)


def test_swapping_prefix_breaks_checksum() -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    with pytest.raises(MalformedKey, match="checksum"):
        parse_key("ag_rt_" + key[6:])


def test_non_base62_character_is_malformed() -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    with pytest.raises(MalformedKey, match="base62"):
        parse_key(key[:10] + "-" + key[11:])


def test_non_string_is_malformed() -> None:
    with pytest.raises(MalformedKey):
        parse_key(b"ag_at_")
    with pytest.raises(MalformedKey):
        parse_key(None)


def test_malformed_key_reason_and_no_echo() -> None:
    secretish = "ag_at_" + "x" * 10
    with pytest.raises(MalformedKey) as info:
        parse_key(secretish)
    assert info.value.reason is Reason.MALFORMED_KEY
    assert secretish not in str(info.value)
    assert secretish not in repr(info.value)


def test_hash_is_sha256_of_the_key() -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    assert hash_key(key) == hashlib.sha256(key.encode()).digest()


def test_looks_like_key() -> None:
    assert looks_like_key(generate_key(KeyKind.REFRESH).reveal())
    assert not looks_like_key("ag_at_nope")


def test_new_id_is_prefixed_and_unique() -> None:
    ids = {new_id("key") for _ in range(500)}
    assert len(ids) == 500
    assert all(i.startswith("key_") and len(i) == 20 for i in ids)


def _edited(key: str, position: int, text: str) -> str:
    cut = position % (len(key) + 1)
    return key[:cut] + text + key[cut + 1 :]


#: Every key the strategies below generated in this run, with its kind.
GENERATED: dict[str, KeyKind] = {}


def _remember(kind: KeyKind) -> str:
    key = generate_key(kind).reveal()
    GENERATED[key] = kind
    return key


_generated = st.sampled_from(list(KeyKind)).map(_remember)


@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.integers(),
        st.none(),
        st.lists(st.text()),
        _generated,
        st.builds(_edited, _generated, st.integers(0, KEY_LENGTH), st.text(max_size=3)),
    )
)
def test_parse_accepts_exactly_the_keys_generate_key_makes(value: object) -> None:
    # The oracle: a key is valid iff generate_key produced it in this run (an edit that lands on
    # another valid key would be a 1-in-2**32 checksum collision).
    if not isinstance(value, str) or value not in GENERATED:
        with pytest.raises(MalformedKey) as refused:
            parse_key(value)
        assert refused.value.reason is Reason.MALFORMED_KEY
        return
    assert parse_key(value) == (GENERATED[value], value)


@given(st.text(alphabet=ALPHABET, min_size=49, max_size=49), st.sampled_from(["ag_at_", "ag_rt_"]))
def test_random_base62_bodies_almost_never_pass_checksum(body: str, prefix: str) -> None:
    try:
        parsed = parse_key(prefix + body)
    except MalformedKey:
        return
    assert parsed.value == prefix + body  # a 1-in-4-billion checksum collision is still a key


@given(st.data())
def test_any_single_substitution_is_caught(data: st.DataObject) -> None:
    key = generate_key(KeyKind.ACCESS).reveal()
    position = data.draw(st.integers(min_value=6, max_value=KEY_LENGTH - 1))
    shift = data.draw(st.integers(min_value=1, max_value=61))  # any other base62 character
    replacement = ALPHABET[(ALPHABET.index(key[position]) + shift) % 62]
    with pytest.raises(MalformedKey):
        parse_key(key[:position] + replacement + key[position + 1 :])
