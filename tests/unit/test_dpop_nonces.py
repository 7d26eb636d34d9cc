"""Stateless server nonces (RFC 9449 §8 and §9)."""

from __future__ import annotations

import pytest

from agentguard.dpop import NonceSource
from agentguard.testing import FakeClock

SECRET = b"n" * 32


def test_8_nonce_secret_must_have_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NonceSource(b"short", FakeClock())


def test_8_nonce_is_valid_in_its_step_and_the_next_only() -> None:
    clock = FakeClock()
    source = NonceSource(SECRET, clock, step=300)
    nonce = source.current()
    assert source.is_valid(nonce)
    clock.advance(300)
    assert source.is_valid(nonce)
    assert source.current() != nonce
    clock.advance(300)
    assert not source.is_valid(nonce)


def test_8_nonce_is_nqchar_safe() -> None:
    nonce = NonceSource(SECRET, FakeClock()).current()
    assert nonce and all(ch.isalnum() or ch in "-_" for ch in nonce)


def test_8_instances_sharing_a_secret_agree() -> None:
    clock = FakeClock()
    one, other = NonceSource(SECRET, clock), NonceSource(SECRET, clock)
    assert other.is_valid(one.current())


def test_8_a_different_secret_gives_useless_nonces() -> None:
    clock = FakeClock()
    token_endpoint = NonceSource(SECRET, clock)
    resource_server = NonceSource(b"r" * 32, clock)
    assert not resource_server.is_valid(token_endpoint.current())


@pytest.mark.parametrize("junk", ["", "x", "\u00e9\u00e9", "\ud800", "A" * 10_000])
def test_8_junk_nonces_are_invalid_and_never_raise(junk: str) -> None:
    assert not NonceSource(SECRET, FakeClock()).is_valid(junk)


def test_8_repr_hides_the_secret() -> None:
    assert "nnnn" not in repr(NonceSource(SECRET, FakeClock()))
