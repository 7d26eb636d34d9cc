"""KeyCache: a bounded LRU of checked proof headers; a hit refreshes, the least recent goes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agentguard.dpop._algorithms import ALGORITHMS
from agentguard.dpop._keycache import MAX_CACHED_HEADER, CachedKey, KeyCache

_PUBLIC = ec.generate_private_key(ec.SECP256R1()).public_key()


def _entry(name: str) -> CachedKey:
    return CachedKey(ALGORITHMS["ES256"], name, _PUBLIC)


def test_the_least_recently_used_header_is_evicted() -> None:
    cache = KeyCache(2)
    first, second, third = _entry("1"), _entry("2"), _entry("3")
    cache.put("h1", first)
    cache.put("h2", second)
    assert cache.get("h1") is first  # h1 is now the most recent
    cache.put("h3", third)
    assert (cache.get("h1"), cache.get("h2"), cache.get("h3")) == (first, None, third)
    assert len(cache) == 2
    assert repr(cache) == "KeyCache(2/2)"


def test_putting_a_cached_header_again_refreshes_it() -> None:
    cache = KeyCache(2)
    cache.put("h1", _entry("1"))
    cache.put("h2", _entry("2"))
    replacement = _entry("1b")
    cache.put("h1", replacement)
    cache.put("h3", _entry("3"))
    assert cache.get("h1") is replacement
    assert cache.get("h2") is None


def test_a_header_longer_than_the_cap_is_not_kept() -> None:
    cache = KeyCache(4)
    cache.put("h" * (MAX_CACHED_HEADER + 1), _entry("long"))
    assert len(cache) == 0


def test_a_cache_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyCache(0)
