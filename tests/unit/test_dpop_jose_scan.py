"""loads_object's scanner fast path gives the verdict of the full decoder for every input."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.dpop._jose import _DECODER, JOSEError, loads_object

members = st.dictionaries(st.text(max_size=4), st.none() | st.integers() | st.text(max_size=4))
objects = members.map(lambda value: json.dumps(value, separators=(",", ":")))
# Objects, then the same with duplicate members, extra data, NaN, trailing junk or whitespace.
variants = st.one_of(
    objects,
    objects.map(lambda text: text[:-1] + ',"a":1,"a":2}' if len(text) > 2 else '{"a":1,"a":2}'),
    objects.map(lambda text: text + "}"),
    objects.map(lambda text: text + " "),
    objects.map(lambda text: " " + text),
    objects.map(lambda text: text + "{}"),
    st.just('{"a":NaN}'),
    st.just('{"a":1e999}'),
    st.just("{"),
    st.just("{}}"),
    st.just('{"a":}'),
    st.text(max_size=12).map(lambda text: "{" + text + "}"),
)


def _slow(raw: bytes) -> object:
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # JOSEError is a ValueError
        return "refused"
    return value if isinstance(value, dict) else "refused"


def _fast(raw: bytes) -> object:
    try:
        return loads_object(raw)
    except JOSEError:
        return "refused"


@settings(max_examples=500)
@given(variants)
def test_fast_path_agrees_with_the_decoder(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    assert _fast(raw) == _slow(raw)


def test_duplicates_and_extra_data_are_refused_on_the_fast_path() -> None:
    assert _fast(b'{"a":1,"a":2}') == "refused"
    assert _fast(b'{"a":1}{"b":2}') == "refused"
    assert _fast(b'{"a":1}') == {"a": 1}
