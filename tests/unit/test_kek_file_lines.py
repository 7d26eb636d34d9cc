"""A key-encryption key file may hold its ring comma-separated or one key per line."""

from __future__ import annotations

import base64
import os

import pytest

from agentguard._config_source import decode_secret
from agentguard.credentials import KeyRing


def _key(name: str) -> str:
    return f"{name}:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"


@pytest.mark.parametrize("separator", [",", "\n", "\r\n", "\n\n"])
def test_both_layouts_give_the_same_ring_primary_first(separator: str) -> None:
    new, old = _key("kek-2"), _key("kek-1")
    raw = f"{new}{separator}{old}\n".encode()
    ring = KeyRing.from_string(decode_secret("kek", raw).get_secret_value())  # type: ignore[attr-defined]
    assert list(ring.ids) == ["kek-2", "kek-1"]
