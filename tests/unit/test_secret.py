from __future__ import annotations

import copy
import pickle

import pytest

from agentguard import KeyKind, Secret, generate_key


def test_repr_str_and_format_hide_the_value() -> None:
    key = generate_key(KeyKind.ACCESS)
    value = key.reveal()
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", "%s" % key):  # noqa: UP031
        assert value not in shown
        assert shown == "Secret('ag_at_********')"
    assert repr(Secret("hunter2")) == "Secret('********')"


def test_equality_is_by_value() -> None:
    assert Secret("a" * 40) == Secret("a" * 40)
    assert Secret("a" * 40) != Secret("b" * 40)
    assert Secret("x") != "x"
    assert hash(Secret("x")) == hash(Secret("x"))


def test_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(Secret("hunter2"))


def test_deepcopy_keeps_the_same_object() -> None:
    secret = Secret("hunter2")
    assert copy.deepcopy(secret) is secret


def test_only_wraps_str() -> None:
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]
