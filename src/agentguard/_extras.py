"""Optional dependencies: one place that knows which extra installs which driver.

Every import of an optional package (``asyncpg``, ``redis``, ``uvicorn``, ``fastapi``, ``mcp``)
goes through :func:`import_extra` or, for module-level ``from x import y`` lines, through
``except ImportError as error: raise missing_extra(error) from None``. A missing package then
becomes :class:`MissingExtra`, whose message is one line naming the extra to install, from the
package index and from a checkout (agentguard is not published yet)::

    the PostgreSQL store needs asyncpg: pip install 'agentguard[postgres]' (from a checkout:
    pip install -e '.[postgres]')

:class:`MissingExtra` is both an :class:`ImportError` (code that probes for an optional feature
keeps working) and a :class:`~agentguard.errors.ConfigurationError` (the CLI prints it on one
line and exits 2; the gateway refuses to start with it).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from agentguard.errors import ConfigurationError

__all__ = ["EXTRAS", "MissingExtra", "import_extra", "install_hint", "missing_extra"]

# top-level package -> (extra that installs it, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "asyncpg": ("postgres", "the PostgreSQL store"),
    "redis": ("redis", "Redis support (the replay cache, the limit store)"),
    "uvicorn": ("server", "agentguard serve"),
    "fastapi": ("fastapi", "the FastAPI integration"),
    "mcp": ("mcp", "the MCP integration"),
    "flask": ("flask", "the Flask integration"),
    "pytest": ("testing", "the conformance suite"),
    "hypothesis": ("testing", "the conformance suite"),
}


def install_hint(extra: str) -> str:
    """``pip install 'agentguard[extra]'`` and its from-a-checkout form."""
    return f"pip install 'agentguard[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


class MissingExtra(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it.

    Attributes:
        package: the missing top-level package, e.g. ``asyncpg``.
        extra: the agentguard extra that installs it, e.g. ``postgres``.
    """

    def __init__(self, package: str) -> None:
        extra, needed_by = EXTRAS[package]
        self.package = package
        self.extra = extra
        super().__init__(f"{needed_by} needs {package}: {install_hint(extra)}")
        self.name = package


def _missing_package(error: ImportError) -> str | None:
    """The optional package ``error`` is about, if it is about one of :data:`EXTRAS`."""
    name = error.name
    if isinstance(error, MissingExtra) or not isinstance(name, str):
        return None
    top = name.partition(".")[0]
    return top if top in EXTRAS else None


def missing_extra(error: ImportError) -> ImportError:
    """``error`` as :class:`MissingExtra` when an optional package is missing, else unchanged.

    For module-level imports: ``except ImportError as error: raise missing_extra(error) from
    None``. An import error about anything else (a broken installation) is returned as is.
    """
    package = _missing_package(error)
    return MissingExtra(package) if package is not None else error


def import_extra(module: str) -> ModuleType:
    """Import ``module`` of an optional package; :class:`MissingExtra` when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_extra(error) from None
