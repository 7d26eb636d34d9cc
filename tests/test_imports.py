"""The core never imports a web framework; ``import agentguard`` stays light.

The static side is .importlinter (``nox -s imports`` runs ``lint-imports``); these tests check
the same promises at run time, in a fresh interpreter, by public package names only.
"""

from __future__ import annotations

import configparser
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import agentguard

ROOT = Path(__file__).resolve().parents[1]

#: Every package below the adapters (shared design §1 and docs/design/layers.md).
CORE = [
    "agentguard",
    "agentguard._decisions",
    "agentguard._gates",
    "agentguard.approvals",
    "agentguard.connect",
    "agentguard.limits",
    "agentguard._dpop_step",
    "agentguard._passage",
    "agentguard._reasons",
    "agentguard.audit",
    "agentguard._clock",
    "agentguard.config",
    "agentguard._context",
    "agentguard.credentials",
    "agentguard.dpop",
    "agentguard.errors",
    "agentguard._guard",
    "agentguard._keys",
    "agentguard._model",
    "agentguard._permissions",
    "agentguard._redaction",
    "agentguard._request",
    "agentguard._resolver",
    "agentguard.review",
    "agentguard.rls",
    "agentguard._secret",
    "agentguard._services",
    "agentguard.storage",
    "agentguard._target",
    "agentguard._audience",
    "agentguard._config_streams",
    "agentguard._live_streams",
    "agentguard._stream_checks",
    "agentguard._stream_lease",
]
FRAMEWORKS = ["starlette", "fastapi", "flask", "werkzeug", "httpx", "uvicorn", "mcp"]
DRIVERS = ["asyncpg", "redis"]


_PROBE = """
import importlib, json, sys
modules, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
found, seen = {}, set()
for name in modules:
    importlib.import_module(name)
    new = [m for m in watched if m in sys.modules and m not in seen]
    seen.update(new)
    if new:
        found[name] = new
print(json.dumps(found))
"""


def _first_importers(modules: list[str], watched: list[str]) -> dict[str, list[str]]:
    """Import ``modules`` in order in a fresh interpreter; which of ``watched`` each one loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules), json.dumps(watched)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def test_core_imports_no_web_framework_or_driver() -> None:
    assert _first_importers(CORE, FRAMEWORKS + DRIVERS) == {}


def test_each_core_package_alone_imports_no_web_framework() -> None:
    # In reverse order too, so a package is seen loading a framework even if an earlier one
    # would have loaded it first.
    assert _first_importers(list(reversed(CORE)), FRAMEWORKS + DRIVERS) == {}


def test_the_check_sees_a_framework_when_one_is_imported() -> None:
    assert _first_importers(["agentguard._httpclient"], FRAMEWORKS) == {
        "agentguard._httpclient": ["httpx"]
    }


def test_asgi_layer_needs_no_starlette() -> None:
    assert _first_importers(["agentguard.asgi"], ["starlette"]) == {}


def test_wsgi_layer_loads_no_asgi_code() -> None:
    found = _first_importers(["agentguard.wsgi"], ["agentguard.asgi", "starlette"])
    assert found == {}


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",))
    parser.read(ROOT / ".importlinter", encoding="utf-8")
    return parser


def _layered_packages() -> set[str]:
    layers = _contracts()["importlinter:contract:layers"]["layers"]
    names = set()
    for line in layers.split("\n"):
        for part in line.replace("|", ":").split(":"):
            name = part.strip().strip("()")  # "(name)": a layer that may be absent
            if name:
                names.add(name)
    return names


def test_every_public_package_has_a_layer() -> None:
    # A new public module or package must be placed in .importlinter (and layers.md) first.
    public = {
        f"agentguard.{info.name}"
        for info in pkgutil.iter_modules(agentguard.__path__)
        if not info.name.startswith("_")
    }
    assert public - _layered_packages() == set()


def test_core_contract_covers_the_core() -> None:
    sources = _contracts()["importlinter:contract:core-no-web"]["source_modules"].split()
    assert sorted(sources) == sorted(name for name in CORE if name != "agentguard")


def test_design_doc_names_every_layered_package() -> None:
    text = (ROOT / "docs" / "design" / "layers.md").read_text(encoding="utf-8")
    missing = sorted(name for name in _layered_packages() if f"`{name}`" not in text)
    assert missing == []


def test_import_agentguard_loads_only_the_version() -> None:
    # Every public name of the package root is imported on first use: the autoloaded pytest
    # plugin and the CLI's --help pay for nothing they do not use.
    code = (
        "import sys; before = set(sys.modules); import agentguard; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('agentguard') "
        "or m.split('.')[0] in ('pydantic', 'anyio', 'cryptography')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['agentguard', 'agentguard._version']"


def test_every_root_name_resolves_from_its_module() -> None:
    for name in agentguard.__all__:
        assert getattr(agentguard, name) is not None, name
