"""One root for every exception agentguard defines; HTTP refusals under RequestRefused only."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import agentguard
from agentguard._config_source import SourceError
from agentguard._content_type import AmbiguousContentType
from agentguard._extras import MissingExtra
from agentguard.audit import CheckpointError, CheckpointRefused
from agentguard.audit._archive import ArchiveRefused
from agentguard.cli._errors import CommandError, CommandRefused
from agentguard.config import SettingsError
from agentguard.credentials import MintingError, SecretEchoed
from agentguard.credentials._vault import KeyMissing, VaultError
from agentguard.dpop._jose import JOSEError
from agentguard.dpop._jwk import JWKError
from agentguard.errors import (
    AgentGuardError,
    ConfigurationError,
    InvalidToken,
    RequestRefused,
    StoreUnavailable,
    UsageError,
)
from agentguard.review import ReviewBlocked
from agentguard.review._budget import ReviewDeadlineExceeded
from agentguard.review._linear import PatternError
from agentguard.storage import IntegrityError, StorageError
from agentguard.storage._sqlite.schema import SchemaVersionError

# Public exception classes that stay outside the root, each for a reason that outlives this test.
OUTSIDE_ON_PURPOSE = {
    # a framework's own exception type, so the framework handles it; it carries a RequestRefused
    "agentguard.integrations.fastapi.AgentGuardHTTPException",
    "agentguard.integrations.mcp.ToolPermissionDenied",
    # testing fakes: they stand for a third party's error (a driver's, a failed assertion)
    "agentguard.testing._faults.InjectedFault",
    "agentguard.testing.conformance._stateful.Divergence",
}
# Adapter control flow that never escapes to a user: each entry goes once its module makes the
# class private (``_ResponseWithheld``) or moves it under the root.
OUTSIDE_UNTIL_MOVED: set[str] = set()


def _import_everything() -> None:
    for module in pkgutil.walk_packages(agentguard.__path__, "agentguard."):
        if module.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(module.name)
        except MissingExtra:  # an optional extra that is not installed here
            continue


def _our_exception_classes() -> dict[str, type[BaseException]]:
    _import_everything()
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [BaseException]
    while pending:
        for sub in pending.pop().__subclasses__():
            name = f"{sub.__module__}.{sub.__qualname__}"
            if name not in found:
                pending.append(sub)
                if sub.__module__.startswith("agentguard"):
                    found[name] = sub
    return found


def test_every_exception_class_is_under_the_root_private_or_justified() -> None:
    outside = {
        name
        for name, cls in _our_exception_classes().items()
        if not issubclass(cls, AgentGuardError) and not cls.__name__.startswith("_")
    }
    assert outside <= OUTSIDE_ON_PURPOSE | OUTSIDE_UNTIL_MOVED, sorted(
        outside - OUTSIDE_ON_PURPOSE - OUTSIDE_UNTIL_MOVED
    )
    # a stale entry (moved under the root, renamed, removed) must leave the lists too
    assert outside >= OUTSIDE_ON_PURPOSE | OUTSIDE_UNTIL_MOVED, sorted(
        (OUTSIDE_ON_PURPOSE | OUTSIDE_UNTIL_MOVED) - outside
    )


def test_only_request_refusals_render_as_http() -> None:
    for name, cls in _our_exception_classes().items():
        if hasattr(cls, "to_http"):
            assert issubclass(cls, RequestRefused), name
    for cls in (AgentGuardError, ConfigurationError, UsageError, StorageError, MissingExtra):
        assert not hasattr(cls, "to_http") and not hasattr(cls, "status"), cls


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (RequestRefused, AgentGuardError),
        (InvalidToken, RequestRefused),
        (StoreUnavailable, RequestRefused),
        (ReviewBlocked, RequestRefused),
        (ConfigurationError, AgentGuardError),
        (SettingsError, ConfigurationError),
        (SourceError, ConfigurationError),
        (KeyMissing, ConfigurationError),
        (KeyMissing, VaultError),
        (UsageError, AgentGuardError),
        (StorageError, AgentGuardError),
        (IntegrityError, StorageError),
        (SchemaVersionError, StorageError),
        (VaultError, AgentGuardError),
        (MintingError, AgentGuardError),
        (SecretEchoed, AgentGuardError),
        (CommandError, AgentGuardError),
        (CommandRefused, AgentGuardError),
        # the built-in each used to be, kept as a second base for callers that catch it
        (UsageError, ValueError),
        (PatternError, ValueError),
        (CheckpointError, ValueError),
        (AmbiguousContentType, ValueError),
        (JOSEError, ValueError),
        (JWKError, ValueError),
        (ReviewDeadlineExceeded, TimeoutError),
        (CheckpointRefused, RuntimeError),
        (ArchiveRefused, RuntimeError),
        (MissingExtra, ImportError),
    ],
)
def test_where_each_error_sits(cls: type[BaseException], base: type[BaseException]) -> None:
    assert issubclass(cls, base)


@pytest.mark.parametrize(
    "cls",
    [ConfigurationError, UsageError, StorageError, VaultError, CommandError, CommandRefused],
)
def test_errors_raised_to_python_callers_are_not_refusals(cls: type[AgentGuardError]) -> None:
    assert not issubclass(cls, RequestRefused)
    assert not issubclass(ConfigurationError, ValueError)  # settings, not one argument's value
