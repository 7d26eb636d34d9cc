"""EchoScanners: compiled echo scanners reused between calls, bounded, exact per secret set."""

from __future__ import annotations

import pytest

from agentguard.asgi._relay import EchoScanners
from agentguard.credentials import SecretEchoed

FIRST = "vendor-key-" + "1" * 24
SECOND = "vendor-key-" + "2" * 24


def test_the_same_secret_set_reuses_one_compiled_scanner() -> None:
    scanners = EchoScanners(4)
    assert scanners.get(frozenset({FIRST})) is scanners.get(frozenset({FIRST}))


def test_each_secret_set_gets_a_scanner_for_exactly_its_secrets() -> None:
    scanners = EchoScanners(4)
    first = scanners.get(frozenset({FIRST}))
    both = scanners.get(frozenset({FIRST, SECOND}))
    assert first is not both
    assert not first.found_in(SECOND.encode())
    assert both.found_in(SECOND.encode())
    with pytest.raises(SecretEchoed):
        both.check_body(b'{"echo": "' + SECOND.encode() + b'"}')


def test_the_least_recently_used_set_is_dropped_beyond_the_bound() -> None:
    scanners = EchoScanners(2)
    first = scanners.get(frozenset({FIRST}))
    scanners.get(frozenset({SECOND}))
    assert scanners.get(frozenset({FIRST})) is first  # used again: now the most recent
    scanners.get(frozenset({FIRST, SECOND}))  # drops {SECOND}, the least recently used
    assert scanners.get(frozenset({FIRST})) is first
    assert "held=2" in repr(scanners)
    assert FIRST not in repr(scanners)


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EchoScanners(0)
