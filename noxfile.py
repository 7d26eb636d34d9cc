"""Developer sessions: ``nox -s tests lint typecheck`` before every commit; ``nox -s docs``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter nox runs on, so a fresh machine needs no other Python


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the library, the tests and the benchmarks."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict")


DOCS_REQUIREMENTS = ("mkdocs>=1.6", "mkdocstrings[python]>=0.26")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site; any warning (a broken link, a bad docstring) fails the build."""
    session.install("-e", ".", *DOCS_REQUIREMENTS)
    site = session.create_tmp() + "/site"
    session.run("mkdocs", "build", "--strict", "--site-dir", site, *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmark: one table of figures with same-run baselines, and a JSON results file."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    """The core imports no web framework (also covered by tests/test_imports.py)."""
    session.install("-e", ".")
    session.run("python", "-c", _IMPORT_CHECK)


_IMPORT_CHECK = """
import sys, agentguard, agentguard.guard, agentguard.keys, agentguard.resolver
bad = sorted(m for m in ("starlette", "fastapi", "flask", "httpx") if m in sys.modules)
assert not bad, f"core imported {bad}"
print("core imports no web framework")
"""
