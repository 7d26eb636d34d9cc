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
    session.install("-e", ".[dev]", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    """Import layering: the import-linter contracts in .importlinter, then a runtime check.

    The contracts mirror docs/design/layers.md; tests/test_imports.py checks every core package
    at run time in a fresh interpreter.
    """
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")
    session.run("python", "-c", _IMPORT_CHECK)


#: The core modules whose tests the mutation session measures, each with the tests that guard it.
MUTATION_TARGETS: dict[str, tuple[str, ...]] = {
    "src/agentguard/permissions.py": (
        "tests/unit/test_permissions.py",
        "tests/unit/test_grants.py",
        "tests/unit/test_permissions_contract.py",
    ),
    "src/agentguard/keys/format.py": (
        "tests/unit/test_keys_format.py",
        "tests/unit/test_keys_format_contract.py",
        "tests/unit/test_issuer.py",
        "tests/unit/test_issuer_contract.py",
        "tests/unit/test_resolver.py",
    ),
    "src/agentguard/keys/issuer.py": (
        "tests/unit/test_issuer.py",
        "tests/unit/test_issuer_contract.py",
        "tests/unit/test_issuer_revoke_contract.py",
        "tests/unit/test_issuer_refusal_summaries.py",
        "tests/unit/test_issuer_revocation.py",
        "tests/unit/test_resolver.py",
    ),
    "src/agentguard/resolver.py": ("tests/unit/test_resolver.py",),
    "src/agentguard/dpop/verifier.py": (
        "tests/unit/test_dpop_verifier.py",
        "tests/unit/test_dpop_verifier_reasons.py",
        "tests/unit/test_dpop_attacks.py",
        "tests/unit/test_dpop_nonces.py",
        "tests/unit/test_dpop_htu.py",
        "tests/unit/test_dpop_jose.py",
        "tests/unit/test_dpop_key.py",
    ),
    "src/agentguard/audit/chain.py": (
        "tests/unit/test_audit_canonical.py",
        "tests/unit/test_audit_verify.py",
        "tests/unit/test_audit_writer.py",
        "tests/unit/test_audit_proofs.py",
        "tests/unit/test_audit_merkle.py",
        "tests/test_audit_fork.py",
        "tests/unit/test_audit_chain_contract.py",
    ),
}

#: mutmut exit codes: the tests caught the mutant (failed, crashed, hung or type-checked it out).
_CAUGHT = {1, 3, 24, -24, 36, 37, 152, 255, -9, -11}
#: The tests ran and passed with the mutant in place, or no test reached it.
_MISSED = {0, 5, 33}


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation score of the core's tests (slow: not in CI). Target: 90% of mutants killed.

    ``nox -s mutation`` measures every module in ``MUTATION_TARGETS``; ``nox -s mutation --
    src/agentguard/permissions.py`` only the ones named (``--no-venv``: in the current
    environment, which then needs mutmut installed). mutmut runs in a copy of the tree, so
    the working tree never gets a ``mutants/`` folder; the score per module is printed at the end.
    """
    import json
    import shutil
    from pathlib import Path

    if session.venv_backend != "none":  # ``nox --no-venv``: mutmut from the current environment
        session.install("-e", ".[dev]", "mutmut>=3.2")
    targets = list(session.posargs) or list(MUTATION_TARGETS)
    unknown = sorted(set(targets) - set(MUTATION_TARGETS))
    if unknown:
        session.error(f"no tests are listed for {unknown}: add them to MUTATION_TARGETS")
    tests = sorted({test for target in targets for test in MUTATION_TARGETS[target]})
    work = Path(session.create_tmp()).resolve() / "mutation"
    shutil.rmtree(work, ignore_errors=True)
    ignored = shutil.ignore_patterns(".git", ".nox", ".venv", "mutants", "__pycache__", "site")
    shutil.copytree(Path(__file__).parent, work, ignore=ignored)
    listed = "\n    ".join
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src/\n"
        f"only_mutate =\n    {listed(targets)}\n"
        f"pytest_add_cli_args_test_selection =\n    {listed(tests)}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
    )
    with session.chdir(work):
        session.run("mutmut", "run", external=True, success_codes=[0, 1])
    rows = []
    for target in targets:
        meta = work / "mutants" / f"{target}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"].values() if meta.exists() else []
        caught = sum(code in _CAUGHT for code in codes)
        missed = sum(code in _MISSED for code in codes)
        score = f"{100 * caught / (caught + missed):.1f}%" if caught + missed else "n/a"
        rows.append(f"{target}: {caught} killed of {caught + missed} ({score})")
    session.log("mutation score (target: 90% killed)\n  " + "\n  ".join(rows))


_IMPORT_CHECK = """
import sys, agentguard, agentguard._guard, agentguard._keys, agentguard._resolver
bad = sorted(m for m in ("starlette", "fastapi", "flask", "httpx") if m in sys.modules)
assert not bad, f"core imported {bad}"
print("core imports no web framework")
"""
