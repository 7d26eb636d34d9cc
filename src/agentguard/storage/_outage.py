"""Turning a storage failure into a fail-closed refusal: one boundary for every backend.

Any exception a storage backend raises (a driver error, ``OSError``, a timeout, a third-party
backend's own exception) becomes :class:`~agentguard.errors.StoreUnavailable`: ``503`` with
``Retry-After``, which the guard audits like any other refusal. Only an
:class:`~agentguard.errors.RequestRefused` or :class:`~agentguard.errors.UsageError` raised
on purpose passes through unchanged, and
``BaseException`` (cancellation, ``KeyboardInterrupt``) is never caught.

Two ways in: :func:`store_outage` around a call site, and :func:`shield_store`, a thin proxy
whose every storage-Protocol method goes through :func:`store_outage`. The guard shields each
store it is given, so a backend nobody here wrote still cannot turn an outage into a ``500``.

What is logged: the store's role, the method and the exception's type, never its message
(driver messages can quote query parameters, which include key hashes and ciphertext). An
exception that looks like a programming error (``TypeError``, ``AttributeError``, ...) is still
refused with 503, never a 500, but is logged at error level as a suspected bug, with the file
and line that raised it, so it is not mistaken for an outage.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from agentguard.errors import RequestRefused, StoreUnavailable, UsageError
from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore
from agentguard.storage._gate_protocols import ApprovalStore, LimitStore, OperatorStore
from agentguard.storage._protocols import (
    AuditStore,
    CredentialStore,
    DirectoryStore,
    KeyStore,
    ReplayCache,
)

__all__ = [
    "PROGRAMMING_ERRORS",
    "PROTOCOLS",
    "STORE_METHODS",
    "protocol_methods",
    "shield_store",
    "store_outage",
]

logger = logging.getLogger("agentguard.storage")

_Store = TypeVar("_Store")

#: Exceptions that mean "this code is wrong", not "the backend is down". Still refused with
#: 503 (fail closed), but logged as a suspected bug with the raising file and line.
#: Raised on purpose and passed through unchanged: refusals (a corrupt record, a token a
#: resolver rejects) and API misuse. Everything else, a backend's StorageError included, is 503.
_PASSED = (RequestRefused, UsageError)

PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    AttributeError,
    NameError,
    AssertionError,
    NotImplementedError,
    RecursionError,
)

#: The storage contracts, each with the async methods it declares.
PROTOCOLS: tuple[type, ...] = (
    DirectoryStore,
    KeyStore,
    ReplayCache,
    CredentialStore,
    AuditStore,
    ApprovalStore,
    OperatorStore,
    LimitStore,
    ConnectionStore,
    ConnectFlowStore,
)


def protocol_methods(protocol: type) -> tuple[str, ...]:
    """The names of the async methods ``protocol`` declares (inherited ones included), sorted."""
    return tuple(
        sorted(
            name
            for name in dir(protocol)
            if not name.startswith("_") and inspect.iscoroutinefunction(getattr(protocol, name))
        )
    )


#: Every method of every storage Protocol: what :func:`shield_store` translates.
STORE_METHODS: frozenset[str] = frozenset(
    name for protocol in PROTOCOLS for name in protocol_methods(protocol)
)


def _type_name(error: BaseException) -> str:
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _raised_at(error: BaseException) -> str:
    """``file:line`` of the innermost frame that raised ``error`` (no locals, no message)."""
    trace = error.__traceback__
    if trace is None:
        return "unknown"
    while trace.tb_next is not None:
        trace = trace.tb_next
    code = trace.tb_frame.f_code
    return f"{Path(code.co_filename).name}:{trace.tb_lineno} in {code.co_name}"


_NAMED_ROLES = frozenset(
    {
        "approval store",
        "limit store",
        "operator store",
        "credential store",
        "replay cache",
        "connection store",
    }
)


def _unavailable(error: Exception, where: str) -> StoreUnavailable:
    """Log ``error`` (its type and, for a suspected bug, its location) and refuse with 503."""
    if isinstance(error, PROGRAMMING_ERRORS):
        logger.error(
            "storage call %s raised %s at %s: a bug in the backend or its caller, not an "
            "outage; refused with 503",
            where,
            _type_name(error),
            _raised_at(error),
        )
    else:
        logger.error("storage call failed: %s: %s", where, _type_name(error))
    role = where.split(".", 1)[0]
    if role in _NAMED_ROLES:  # the client is told which part is down (never how or where)
        return StoreUnavailable(f"the {role} is unavailable; retry later")
    return StoreUnavailable()


@contextmanager
def store_outage(role: str = "store", method: str | None = None) -> Iterator[None]:
    """Re-raise anything but a refusal or a usage error as :class:`StoreUnavailable` (503).

    ``role`` (``"key store"``, ``"replay cache"``) and ``method`` name the call in the log.
    """
    try:
        yield
    except _PASSED:
        raise
    except Exception as error:
        where = role if method is None else f"{role}.{method}"
        raise _unavailable(error, where) from error


class _Shield:
    """Forwards every attribute to the store; storage-Protocol methods go through the boundary.

    Each Protocol method the store has becomes an instance attribute (a plain dictionary hit on
    the hot path) that looks the store's method up at call time, so a method replaced on the
    store later is still the one called. Other attributes are forwarded on access.
    """

    def __init__(self, store: object, role: str) -> None:
        self._store = store
        self._role = role
        for name in STORE_METHODS:
            if callable(getattr(store, name, None)):
                setattr(self, name, _shielded(store, role, name))

    def __getattr__(self, name: str) -> Any:
        if name == "_store":  # not set yet (mid-construction): no recursion
            raise AttributeError(name)
        attribute = getattr(self._store, name)
        if name in STORE_METHODS and callable(attribute):  # a method the store gained later
            return _shielded(self._store, self._role, name)
        return attribute

    def __repr__(self) -> str:
        return f"shield_store({self._store!r}, role={self._role!r})"


def _shielded(store: object, role: str, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    where = f"{role}.{name}"

    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(store, name)(*args, **kwargs)
        except _PASSED:
            raise
        except Exception as error:
            raise _unavailable(error, where) from error

    call.__name__ = call.__qualname__ = name
    return call


def shield_store(store: _Store, role: str) -> _Store:
    """``store``, with every storage-Protocol method failing only as :class:`StoreUnavailable`.

    ``role`` names the store in logs (``"key store"``). Shielding a shield adds nothing: the
    same object comes back. The shield has the store's Protocol methods as its own attributes,
    so ``isinstance`` against the runtime-checkable Protocols answers as for the store.
    """
    if isinstance(store, _Shield):
        return store
    return cast(_Store, _Shield(store, role))
