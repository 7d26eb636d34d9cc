"""Fault injection for storage backends: prove that a failing store never becomes a ``500``.

:class:`FaultyStore` wraps any store (ours or your own backend) and, for each method of the
storage Protocols the store has, can make that method raise on its next call, its next few
calls, or every call until healed. Put it where your app's store goes and drive real requests::

    store = FaultyStore(MemoryStore())
    guard = Guard(store, rules=[...])
    store.fail("lookup", ConnectionResetError)          # every call, until healed
    store.fail("check_and_store", TimeoutError, times=1)  # the next call only
    store.fail_all(OSError)                             # the whole store is down
    store.heal()

Then assert what the caller sees: ``503 temporarily_unavailable`` with ``Retry-After`` while
storage is needed for the decision, an audit event when the audit store is up, and never a
500 or a dropped connection. ``store.injected[name]`` counts the calls that raised, so a test
can tell "this method is not on this request's path" from "the fault was swallowed".

The wrapper's class is generated per store from :data:`STORAGE_METHODS`: it has exactly the
Protocol methods the wrapped store has, so ``isinstance(store, KeyStore)`` and the other
runtime Protocol checks answer as they would for the store itself. Every other attribute
(``initialize``, ``close``, ...) is forwarded untouched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore
from agentguard.storage._outage import PROTOCOLS, protocol_methods

__all__ = ["STORAGE_METHODS", "FaultyStore", "InjectedFault"]

#: Each storage Protocol's name and the async methods it declares (inherited ones included):
#: the outage boundary's Protocols and connected accounts'.
STORAGE_METHODS: dict[str, tuple[str, ...]] = {
    protocol.__name__: protocol_methods(protocol)
    for protocol in dict.fromkeys((*PROTOCOLS, ConnectionStore, ConnectFlowStore))
}

_METHODS = frozenset(name for names in STORAGE_METHODS.values() for name in names)


class InjectedFault(ConnectionError):
    """The default error :meth:`FaultyStore.fail` injects: a connection lost mid-call."""


@dataclass
class _Fault:
    error: Callable[[], BaseException]
    remaining: int | None  # None: until healed


def _method(name: str) -> Callable[..., Any]:
    async def call(self: FaultyStore, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        fault = self._faults.get(name)
        if fault is not None:
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[name]
            self.injected[name] += 1
            raise fault.error()
        return await getattr(self.store, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{name}`` of the wrapped store, unless a fault is set for it."
    return call


class FaultyStore:
    """A store whose storage-Protocol methods raise on demand (see the module doc).

    Args:
        store: the working store to wrap; calls without a fault go to it.

    Attributes:
        store: the wrapped store (read it directly to check what was written).
        calls: how many times each Protocol method was called through the wrapper.
        injected: how many of those calls raised an injected fault.
    """

    methods: ClassVar[frozenset[str]] = frozenset()
    _classes: ClassVar[dict[tuple[type, frozenset[str]], type[FaultyStore]]] = {}

    def __new__(cls, store: object) -> FaultyStore:
        names = frozenset(name for name in _METHODS if callable(getattr(store, name, None)))
        key = (cls, names)
        generated = FaultyStore._classes.get(key)
        if generated is None:
            namespace: dict[str, Any] = {name: _method(name) for name in names}
            namespace["methods"] = names
            generated = type(f"Faulty{type(store).__name__}", (cls,), namespace)
            FaultyStore._classes[key] = generated
        return object.__new__(generated)

    def __init__(self, store: object) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._faults: dict[str, _Fault] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "store":  # not set yet (mid-construction): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"FaultyStore({self.store!r}, failing={sorted(self._faults)})"

    def fail(
        self,
        method: str,
        error: Callable[[], BaseException] = InjectedFault,
        *,
        times: int | None = None,
    ) -> None:
        """Make ``method`` raise ``error()`` on its next ``times`` calls (``None``: until healed).

        ``error`` is an exception class or any callable returning a fresh exception.
        """
        if method not in self.methods:
            raise ValueError(f"{method!r} is not a storage Protocol method of the wrapped store")
        if times is not None and times < 1:
            raise ValueError("times is at least 1 (or None for every call)")
        self._faults[method] = _Fault(error, times)

    def fail_all(self, error: Callable[[], BaseException] = InjectedFault) -> None:
        """Make every Protocol method raise until healed: the whole store is down."""
        for method in self.methods:
            self.fail(method, error)

    def heal(self, method: str | None = None) -> None:
        """Stop injecting faults into ``method`` (every method when ``None``)."""
        if method is None:
            self._faults.clear()
        else:
            self._faults.pop(method, None)

    @property
    def failing(self) -> frozenset[str]:
        """The methods that raise on their next call."""
        return frozenset(self._faults)
