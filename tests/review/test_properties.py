"""Hypothesis: the parsers and normaliser never raise, the chain raises only its own errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.review import (
    Direction,
    InjectionScreen,
    Outcome,
    ReviewBlocked,
    ReviewChain,
    ReviewContext,
    SecretLeakReviewer,
    Verdict,
)
from agentguard.review._chain import decode_body, encode_body
from agentguard.review._normalise import normalise, rewrite_fields, text_fields
from agentguard.review._shapes import find_shapes

pytestmark = pytest.mark.anyio
SECRET = "crm-live-Zq81nB0xYv2tK9mW4pR7sL3d"
TYPES = st.sampled_from(
    ["", "text/plain", "application/json", "application/x-www-form-urlencoded", "text/html"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.text())
def test_normalise_never_raises_and_is_stable(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == normalise(normalise(once))


@given(st.text(alphabet=st.characters(min_codepoint=0xFF01, max_codepoint=0xFF5E)))
def test_fullwidth_letters_fold_to_ascii(text: str) -> None:
    assert normalise(text).isascii()


def _bracket(field: str) -> str:
    return "<" + field + ">"  # injective, so no two fields can merge after the edit


_bodies = st.one_of(
    st.text(),
    json_values.map(json.dumps),
    st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4).map(
        lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
    ),
)


@SETTINGS
@given(TYPES, _bodies)
def test_rewriting_edits_exactly_the_fields_it_reads(content_type: str, text: str) -> None:
    fields = text_fields(content_type, text)
    rewritten = rewrite_fields(content_type, text, _bracket)
    if rewritten is None:
        assert fields is None, "fields were read from a body the rewriter could not parse"
        return
    assert text_fields(content_type, rewritten) == (
        None if fields is None else [_bracket(field) for field in fields]
    )
    assert rewrite_fields(content_type, text, lambda field: field) is not None


@SETTINGS
@given(st.text(), st.sampled_from(["", " ", "x", "\n", "_"]))
def test_shapes_are_real_spans_of_the_text(text: str, pad: str) -> None:
    key = "AKIA" + "ABCDEFGHIJKLMNOP"  # an AWS access key id shape, 20 characters
    found = find_shapes(text)
    for match in found:
        assert 0 <= match.start < match.end <= len(text), match
    # a shape planted between separators is found exactly where it was put
    planted = text + " " + key + " " + pad
    spans = [(m.shape, planted[m.start : m.end]) for m in find_shapes(planted)]
    assert ("aws_access_key", key) in spans


@SETTINGS
@given(json_values)
def test_json_fields_round_trip(value: object) -> None:
    body = json.dumps(value)
    assert rewrite_fields("application/json", body, lambda s: s) == json.dumps(
        value, ensure_ascii=False, separators=(",", ":")
    )
    fields = text_fields("application/json", body)
    assert fields is not None or not body.lstrip().startswith(("{", "[", '"'))


@SETTINGS
@given(st.binary())
def test_bodies_survive_decoding(body: bytes) -> None:
    assert encode_body(decode_body(body)) == body


CHAIN = ReviewChain(
    [SecretLeakReviewer(secrets=[SECRET], action="redact"), InjectionScreen(action="redact")]
)


@SETTINGS
@given(st.binary(max_size=2048) | st.text(max_size=2048).map(str.encode), TYPES)
async def test_arbitrary_content_never_makes_the_chain_raise(body: bytes, kind: str) -> None:
    for direction in Direction:
        context = ReviewContext(direction, content_type=kind)
        result = await CHAIN.review_body(context, body)
        assert isinstance(result.body, bytes)
        stream = CHAIN.stream(context)
        try:
            out = await stream.feed(body[: len(body) // 2])
            out += await stream.feed(body[len(body) // 2 :])
            out += await stream.finish()
        except ReviewBlocked:
            continue
        assert SECRET.encode() not in out


@SETTINGS
@given(st.text(max_size=500), st.sampled_from([ValueError, KeyError, RuntimeError, TypeError]))
async def test_a_reviewer_that_raises_always_blocks(text: str, error: type[Exception]) -> None:
    async def broken(context: ReviewContext, content: str) -> Verdict:
        raise error(content)

    result = await ReviewChain([SecretLeakReviewer(), broken]).review(
        ReviewContext(Direction.IN), text
    )
    assert result.blocked is not None and result.blocked.outcome is Outcome.BLOCK


@SETTINGS
@given(st.text(max_size=300), st.text(max_size=300), st.integers(1, 50))
async def test_a_secret_anywhere_in_a_stream_never_gets_out(
    before: str, after: str, size: int
) -> None:
    body = (before + SECRET + after).encode()
    stream = ReviewChain([SecretLeakReviewer(secrets=[SECRET], action="redact")]).stream(
        ReviewContext(Direction.OUT)
    )
    out = b""
    for start in range(0, len(body), size):
        out += await stream.feed(body[start : start + size])
    out += await stream.finish()
    assert SECRET.encode() not in out
