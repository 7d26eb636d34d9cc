"""The public surface of agentguard: every public module, its names and their signatures.

A public module is one whose dotted path has no part starting with ``_``; its public names are
its ``__all__``. ``tests/test_public_surface.py`` compares this against
``tests/data/public_surface.txt``, so every change to the surface is deliberate: regenerate the
file with ``python -m tests.support.surface --write`` and say what changed in the CHANGELOG.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import re
import sys
import typing
from pathlib import Path

import agentguard

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "public_surface.txt"

#: Modules that need an optional extra to import; they are public all the same.
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def public_modules() -> list[str]:
    """Every importable public module, sorted."""
    names = ["agentguard"]
    for info in pkgutil.walk_packages(agentguard.__path__, "agentguard."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        names.append(info.name)
    return sorted(names)


def _params(signature: inspect.Signature) -> str:
    """Parameter names, kinds and which have defaults; annotations and default values are left
    out, so the snapshot does not move with a dependency's reprs."""
    parts: list[str] = []
    star = False
    for parameter in signature.parameters.values():
        kind = parameter.kind
        if kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        name = parameter.name
        if kind is inspect.Parameter.VAR_POSITIONAL:
            name, star = f"*{name}", True
        elif kind is inspect.Parameter.VAR_KEYWORD:
            name = f"**{name}"
        if parameter.default is not inspect.Parameter.empty:
            name += "=..."
        parts.append(name)
        if kind is inspect.Parameter.POSITIONAL_ONLY:
            following = list(signature.parameters.values())
            index = following.index(parameter)
            if index + 1 == len(following) or following[index + 1].kind is not kind:
                parts.append("/")
    return f"({', '.join(parts)})"


def _signature(value: object) -> str:
    if isinstance(value, type):
        bases = ", ".join(
            f"{base.__module__}.{base.__qualname__}"
            for base in value.__bases__
            if base is not object and not base.__module__.startswith("typing")
        )
        kind = "class"
        if issubclass(value, enum.Enum):
            members = ",".join(value.__members__)
            return f"enum({bases}) [{members}]"
        try:
            shown = _params(inspect.signature(value))
        except (TypeError, ValueError):
            shown = "(...)"
        return f"{kind}({bases}){shown}"
    if callable(value):
        try:
            return f"def{_params(inspect.signature(value))}"
        except (TypeError, ValueError):
            return "def(...)"
    return f"value: {type(value).__name__}"


def surface() -> list[str]:
    """One line per public name: ``module.name  signature``."""
    lines = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in sorted(getattr(module, "__all__", ())):
            if name == "__version__":
                lines.append(f"{module_name}.{name}  value: str")
                continue
            shown = _ADDRESS.sub("", _signature(getattr(module, name)))
            lines.append(f"{module_name}.{name}  {shown}")
    return lines


def homes() -> dict[str, list[str]]:
    """Each public name and the public modules that list it in ``__all__``."""
    found: dict[str, list[str]] = {}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            found.setdefault(name, []).append(module_name)
    return found


#: The reference page that renders each public module's docstrings.
REFERENCE = {
    "agentguard": "guard.md",
    "agentguard.asgi": "asgi.md",
    "agentguard.audit": "audit.md",
    "agentguard.cli": "../operations.md",
    "agentguard.client": "client.md",
    "agentguard.config": "config.md",
    "agentguard.credentials": "credentials.md",
    "agentguard.dpop": "dpop.md",
    "agentguard.errors": "../concepts/errors.md",
    "agentguard.gateway": "../how-to/gateway.md",
    "agentguard.integrations.fastapi": "integrations.md",
    "agentguard.integrations.flask": "integrations.md",
    "agentguard.integrations.mcp": "integrations.md",
    "agentguard.resolvers": "../how-to/external-oauth.md",
    "agentguard.review": "review.md",
    "agentguard.rls": "../how-to/row-level-security.md",
    "agentguard.storage": "storage.md",
    "agentguard.testing": "testing.md",
    "agentguard.testing.conformance": "testing.md",
    "agentguard.wsgi": "wsgi.md",
}


def _is_api_object(value: object) -> bool:
    """A class or a function (not a type alias, which ``callable`` also accepts)."""
    return (inspect.isclass(value) and not typing.get_args(value)) or inspect.isroutine(value)


def _summary(value: object) -> str:
    if not _is_api_object(value):
        return "type alias" if typing.get_origin(value) is not None else "constant"
    doc = inspect.getdoc(value)
    line = (doc or "").strip().split("\n\n", 1)[0].replace("\n", " ")
    line = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", line)
    line = line.replace("``", "`")
    return line.replace("|", "\\|") or "constant"


def api_markdown() -> str:
    """docs/reference/api.md: every public name, by its one home, with its first docstring line."""
    out = [
        "# Public API",
        "",
        "Each public name has exactly one home: the module it is listed under below, and the",
        "only path to import it from. Implementation modules are private (`_name.py`).",
        "`tests/test_public_surface.py` pins this surface (names and signatures) against",
        "`tests/data/public_surface.txt`; this page is generated from the same code with",
        "`python -m tests.support.surface --write-api`. `import agentguard` loads no web",
        "framework, database driver or HTTP server.",
    ]
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        names = sorted(getattr(module, "__all__", ()))
        if not names:
            continue
        page = REFERENCE.get(module_name)
        out += ["", f"## `{module_name}`", ""]
        if page:
            out += [f"Reference: [{page.rsplit('/', 1)[-1].removesuffix('.md')}]({page}).", ""]
        out += ["| name | what it is |", "|---|---|"]
        for name in names:
            value = getattr(module, name)
            shown = f"{name}()" if inspect.isroutine(value) else name
            summary = "the package version" if name == "__version__" else _summary(value)
            out.append(f"| `{shown}` | {summary} |")
    return "\n".join(out) + "\n"


API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"

if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    text = "\n".join(surface()) + "\n"
    if "--write" in sys.argv:
        SNAPSHOT.write_text(text, encoding="utf-8")
        print(f"wrote {SNAPSHOT} ({text.count(chr(10))} names)")
    if "--write-api" in sys.argv:
        API_PAGE.write_text(api_markdown(), encoding="utf-8")
        print(f"wrote {API_PAGE}")
    if len(sys.argv) == 1:
        sys.stdout.write(text)
