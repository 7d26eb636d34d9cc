"""What every contract class shares: the fake clock, the fixtures a backend supplies, typing."""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any, NoReturn

import pytest

from agentguard._keys._format import generate_key, hash_key, new_id
from agentguard._model import Grants, KeyKind, KeyRecord
from agentguard.testing._fakes import FakeClock

__all__ = [
    "ContractBase",
    "assert_implements",
    "assert_store_type",
    "key_record",
    "missing_fixture",
]

OTHER_STORE_MISSING = (
    "implement other_store to run the multi-instance contracts: a fixture returning a second "
    "instance of your store over the same backend as `store` (same database, schema or key "
    "prefix; its own connections, locks and caches), built on the same `clock`"
)


STORE_TYPE_MISSING = (
    "set `store_type = YourStore` on {cls}: mypy --strict then checks YourStore against every "
    "storage Protocol the contracts it inherits test (here {protocol}), and the contract checks "
    "that the `store` fixture returns one"
)


def missing_fixture(message: str) -> NoReturn:
    """Fail the test: a fixture the contract needs was not supplied by the backend's class."""
    pytest.fail(message, pytrace=False)


class ContractBase:
    """Base of the contracts. Subclasses provide a ``store`` fixture built with ``clock``.

    Contracts that compare two instances also use ``other_store``: a second instance over the
    same backend as ``store`` on the same clock. Its default fails the test, with a message
    saying what to implement: a multi-instance contract that silently skipped would prove
    nothing, and "checked live on every call, on every instance" is the promise these contracts
    hold a backend to.

    Every test is async and runs on anyio's pytest plugin (asyncio by default; override the
    ``anyio_backend`` fixture to run on trio if your backend supports it).
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def other_store(self, *args: Any, **kwargs: Any) -> object:
        """A second instance over ``store``'s backend. Override it; this default fails."""
        missing_fixture(OTHER_STORE_MISSING)


_Param = tuple[str, inspect._ParameterKind]


def _compatible(found: list[_Param], wanted: list[_Param]) -> bool:
    """Same names in order, each taking what the Protocol's callers pass.

    A keyword-only parameter may also be positional-or-keyword (it still takes ``member=``);
    every other kind must match exactly.
    """
    if len(found) != len(wanted):
        return False
    either = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return all(
        name == want_name
        and (kind == want_kind or (want_kind is inspect.Parameter.KEYWORD_ONLY and kind is either))
        for (name, kind), (want_name, want_kind) in zip(found, wanted, strict=True)
    )


def assert_implements(store: object, protocol: type) -> None:
    """``store`` has every method of ``protocol``, async, taking the same parameters.

    The runtime half of the typing check (``mypy`` checks the annotations where a backend is
    passed as the Protocol): the Protocol's parameters must come first with the same names and
    kinds, since the guard calls with keywords (``now=``, ``member=``); a keyword-only parameter
    may also be taken positionally (``member: bool`` accepts ``member=``, as mypy agrees);
    further parameters need defaults. Every method must be a coroutine function.
    """
    declared_methods = {
        name: value
        for klass in reversed(protocol.__mro__)
        for name, value in vars(klass).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }
    assert declared_methods, f"{protocol.__name__} declares no async methods"
    for name, declared in declared_methods.items():
        method = getattr(store, name, None)
        assert method is not None, f"{type(store).__name__} lacks {protocol.__name__}.{name}"
        assert inspect.iscoroutinefunction(method), f"{type(store).__name__}.{name} is not async"
        wanted = [(p.name, p.kind) for p in inspect.signature(declared).parameters.values()][1:]
        params = list(inspect.signature(method).parameters.values())
        found = [(p.name, p.kind) for p in params]
        extra = params[len(wanted) :]
        assert _compatible(found[: len(wanted)], wanted) and all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in extra
        ), (
            f"{type(store).__name__}.{name}{inspect.signature(method)} does not match "
            f"{protocol.__name__}.{name}{inspect.signature(declared)}"
        )


def assert_store_type(contract: object, store: object, protocol: type) -> None:
    """The test class names ``store_type``, the fixture returns one, and it has ``protocol``.

    ``store_type`` is the static half: each contract declares it as ``ClassVar[type[P]]`` for
    the Protocol ``P`` it tests, so ``mypy --strict`` checks the backend class an integrator
    assigns against every Protocol of every contract the test class inherits.
    """
    declared = getattr(type(contract), "store_type", None)
    if declared is None:
        missing_fixture(
            STORE_TYPE_MISSING.format(cls=type(contract).__name__, protocol=protocol.__name__)
        )
    assert isinstance(store, declared), (
        f"the store fixture returned a {type(store).__name__}, not the declared store_type "
        f"{declared.__name__}"
    )
    assert_implements(store, protocol)


def key_record(
    clock: FakeClock,
    *,
    kind: KeyKind = KeyKind.ACCESS,
    user_id: str = "u1",
    workspace_id: str = "w1",
    account_id: str = "a1",
    family_id: str | None = None,
    ttl: timedelta = timedelta(hours=1),
    scope: Grants | None = None,
) -> KeyRecord:
    """A fresh key record with a random hash, for store tests."""
    now = clock.now()
    return KeyRecord(
        id=new_id("key"),
        kind=kind,
        key_hash=hash_key(generate_key(kind).reveal()),
        family_id=family_id or new_id("fam"),
        user_id=user_id,
        workspace_id=workspace_id,
        account_id=account_id,
        created_at=now,
        expires_at=now + ttl,
        scope=scope,
    )
