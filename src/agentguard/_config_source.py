"""Where configuration values come from: a TOML file, ``AGENTGUARD_*`` variables, secret files.

Kept apart from :mod:`agentguard.config` (the models) because it is all about provenance: which
line of which file, or which environment variable, gave a value, so that a validation error
can point at it; and whether a secret file is private enough to be read at all.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretBytes, SecretStr

from agentguard._home import expand_home
from agentguard.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "ENVIRONMENT",
    "SECRET_ENVIRONMENT",
    "SECRET_FILES",
    "Source",
    "SourceError",
    "decode_secret",
    "field_name",
    "file_path",
    "level_names",
    "read_private",
    "read_toml",
    "refuse_inline_secrets",
    "relative_to",
]

Location = tuple[str | int, ...]

# Non-secret settings an environment variable may set (it overrides the file).
ENVIRONMENT: dict[str, Location] = {
    "AGENTGUARD_STORE": ("store", "url"),
    "AGENTGUARD_PUBLIC_ORIGIN": ("public_origin",),
    "AGENTGUARD_SERVER_HOST": ("server", "host"),
    "AGENTGUARD_SERVER_PORT": ("server", "port"),
    "AGENTGUARD_SERVER_GRACEFUL_TIMEOUT": ("server", "graceful_timeout"),
    "AGENTGUARD_LOG_LEVEL": ("logging", "level"),
    "AGENTGUARD_LOG_FORMAT": ("logging", "format"),
    "AGENTGUARD_DPOP_ENABLED": ("dpop", "enabled"),
    "AGENTGUARD_DPOP_REQUIRED": ("dpop", "required"),
    "AGENTGUARD_DPOP_REPLAY": ("dpop", "replay"),
    "AGENTGUARD_AUDIT_ORIGIN": ("audit", "origin"),
    "AGENTGUARD_AUDIT_INSTANCE": ("audit", "instance"),
    "AGENTGUARD_AUDIT_CHECKPOINT_DIR": ("audit", "checkpoint_dir"),
    "AGENTGUARD_AUDIT_CHECKPOINT_INTERVAL": ("audit", "checkpoint_interval"),
    "AGENTGUARD_AUDIT_REFUSAL_SUMMARIES": ("audit", "refusal_summaries"),
    "AGENTGUARD_AUDIT_REFUSAL_INTERVAL": ("audit", "refusal_interval"),
    "AGENTGUARD_AUDIT_REFUSAL_MAX_SOURCES": ("audit", "refusal_max_sources"),
    "AGENTGUARD_AUDIT_TILES": ("audit", "tiles"),
    "AGENTGUARD_AUDIT_WITNESS_QUORUM": ("audit", "witness_quorum"),
    "AGENTGUARD_CHECKPOINT_KEY_FILE": ("audit", "checkpoint_key_file"),
    "AGENTGUARD_KEK_FILE": ("secrets", "kek_file"),
    "AGENTGUARD_INTROSPECTION_SECRETS_FILE": ("secrets", "introspection_secrets_file"),
    "AGENTGUARD_DPOP_NONCE_SECRET_FILE": ("secrets", "dpop_nonce_secret_file"),
    "AGENTGUARD_DPOP_TOKEN_NONCE_SECRET_FILE": ("secrets", "dpop_token_nonce_secret_file"),
}

# Secret values: only ever from these variables (or the files named above), never the TOML.
SECRET_ENVIRONMENT: dict[str, str] = {
    "kek": "AGENTGUARD_KEK",
    "checkpoint_key": "AGENTGUARD_CHECKPOINT_KEY",
    "introspection_secrets": "AGENTGUARD_INTROSPECTION_SECRETS",
    "dpop_nonce_secret": "AGENTGUARD_DPOP_NONCE_SECRET",
    "dpop_token_nonce_secret": "AGENTGUARD_DPOP_TOKEN_NONCE_SECRET",
    "approval_webhook_secret": "AGENTGUARD_APPROVAL_WEBHOOK_SECRET",
}

SECRET_FILES = (
    "kek_file",
    "introspection_secrets_file",
    "dpop_nonce_secret_file",
    "dpop_token_nonce_secret_file",
    "approval_webhook_secret_file",
)
_SECRET_NAMES = frozenset(
    {"kek", "checkpoint_key", "introspection_secrets", "nonce_secret", "token_nonce_secret"}
    | {"dpop_nonce_secret", "dpop_token_nonce_secret", "api_key", "password", "secret"}
    | {"approval_webhook_secret", "webhook_secret"}
)

_KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_ASSIGNMENT = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
_TOML_LINE = re.compile(r"at line (\d+)")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(_KEY, text)
    return tuple(part.strip("\"'") for part in parts)


def _line_index(text: str) -> dict[Location, int]:
    """The line on which each table and key of ``text`` is written (first occurrence)."""
    lines: dict[Location, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: Location = ()

    def resolve(name: tuple[str, ...]) -> Location:
        path: list[str | int] = []
        for depth, part in enumerate(name):
            path.append(part)
            if name[: depth + 1] in counts and depth + 1 < len(name):
                path.append(counts[name[: depth + 1]])
        return tuple(path)

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("[["):
            name = _split_key(line[2 : line.find("]]")])
            counts[name] = counts.get(name, -1) + 1
            table = (*resolve(name), counts[name])
            lines.setdefault(table, number)
            lines.setdefault(table[:-1], number)
        elif line.startswith("["):
            table = resolve(_split_key(line[1 : line.find("]")]))
            lines.setdefault(table, number)
        else:
            match = _ASSIGNMENT.match(raw)
            if match is not None:
                lines.setdefault((*table, *_split_key(match.group(1))), number)
    return lines


@dataclass
class Source:
    """Raw settings plus where each came from (file lines, environment variables)."""

    data: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    lines: dict[Location, int] = field(default_factory=dict)
    from_env: dict[Location, str] = field(default_factory=dict)

    def where(self, location: Location) -> str:
        """``file:line`` (or the variable) that set ``location`` or its nearest parent."""
        for size in range(len(location), 0, -1):
            prefix = location[:size]
            if prefix in self.from_env:
                return self.from_env[prefix]
            if prefix in self.lines and self.path is not None:
                return f"{self.path}:{self.lines[prefix]}"
        return str(self.path) if self.path is not None else "settings"

    def line(self, location: Location) -> int | None:
        """The file line of ``location`` or its nearest parent (``None`` if not from the file)."""
        for size in range(len(location), 0, -1):
            if location[:size] in self.from_env:
                return None
            if location[:size] in self.lines:
                return self.lines[location[:size]]
        return None

    def apply_environment(self, environ: Mapping[str, str]) -> None:
        """Let ``AGENTGUARD_*`` variables override the file (see :data:`ENVIRONMENT`)."""
        for variable, location in ENVIRONMENT.items():
            value = environ.get(variable)
            if value is None or value == "":
                continue
            target = self.data
            for part in location[:-1]:
                child = target.get(str(part))
                if not isinstance(child, dict):
                    child = {}
                    target[str(part)] = child
                target = child
            target[str(location[-1])] = value
            self.from_env[location] = variable


class SourceError(ConfigurationError):
    """A value cannot be used: ``where`` is the file (and line), ``problem`` says why."""

    def __init__(self, where: str, problem: str, *, field: str = "") -> None:
        self.where = where
        self.problem = problem
        self.field = field
        super().__init__(f"{where}: {problem}")


def read_toml(path: Path) -> Source:
    """Parse ``path`` and index the line of every key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(str(path), "no such configuration file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(str(path), f"cannot read: {type(error).__name__}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = _TOML_LINE.search(str(error))
        where = f"{path}:{found.group(1)}" if found else str(path)
        reason = str(error).split(" (at line")[0]
        raise SourceError(where, f"not valid TOML: {reason}") from None
    return Source(data=data, path=path, lines=_line_index(text))


def read_private(path: Path) -> bytes:
    """The bytes of a secret file, refusing one that group or others may read or write."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SourceError(str(path), "no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(str(path), "not a regular file")
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SourceError(str(path), f"readable by group or others; run: chmod 600 {path}")
    return path.read_bytes()


def field_name(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def refuse_inline_secrets(source: Source, data: object, location: tuple[str | int, ...]) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            here = (*location, key)
            if key in _SECRET_NAMES:
                hint = SECRET_ENVIRONMENT.get(key, "an AGENTGUARD_* variable")
                raise SourceError(
                    source.where(here),
                    f"secrets are never read from the configuration file; use {hint} "
                    "or a 0600 file",
                    field=field_name(here),
                )
            refuse_inline_secrets(source, value, here)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            refuse_inline_secrets(source, item, (*location, index))


def file_path(source: Source, location: Location, text: str, base: Path) -> str:
    """``text``, the path written at ``location`` in the file, with ``~`` expanded and made
    relative to ``base``; a :class:`SourceError` naming the key when ``~`` cannot be expanded."""
    try:
        path = expand_home(text)
    except ValueError as error:
        raise SourceError(source.where(location), str(error), field=field_name(location)) from None
    return str(path if path.is_absolute() else base / path)


def relative_to(source: Source, base: Path) -> None:
    """Resolve relative paths written in the file against the file's directory."""
    data = source.data
    for section, key in (
        ("audit", "checkpoint_key_file"),
        ("audit", "checkpoint_dir"),
        *(("secrets", name) for name in SECRET_FILES),
    ):
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = file_path(source, (section, key), table[key], base)
    store = data.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        url: str = store["url"]
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            store["url"] = "sqlite:///" + str(base.resolve() / url[len("sqlite:///") :])


def level_names(data: dict[str, Any]) -> None:
    """Let route levels be written ``"read"``/``"write"`` (ServiceRoute validates numbers)."""
    numbers = {"none": 0, "read": 1, "write": 2}

    def number(value: object) -> object:
        return numbers.get(value.lower(), value) if isinstance(value, str) else value

    services = data.get("services")
    for service in services if isinstance(services, list) else ():
        routes = service.get("routes") if isinstance(service, dict) else None
        for route in routes if isinstance(routes, list) else ():
            if not isinstance(route, dict):
                continue
            if "level" in route:
                route["level"] = number(route["level"])
            methods = route.get("methods")
            if isinstance(methods, dict):
                route["methods"] = {name: number(level) for name, level in methods.items()}


def decode_secret(name: str, raw: bytes) -> object:
    if name == "checkpoint_key":
        return SecretBytes(raw)
    text = raw.decode("utf-8", "replace").strip()
    if name == "kek":  # one key per line, or comma-separated on one line: the same key ring
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return SecretStr(",".join(lines))
    if name == "approval_webhook_secret":
        if len(text) < 32:
            raise ValueError("an approval webhook secret is at least 32 characters")
        return SecretBytes(text.encode())
    if name == "introspection_secrets":
        items = [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]
        return tuple(SecretStr(item) for item in items)
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("a DPoP nonce secret is base64url") from None
    if len(decoded) < 32:
        raise ValueError("a DPoP nonce secret is at least 32 random bytes")
    return SecretBytes(decoded)
