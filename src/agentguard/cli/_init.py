"""``agentguard init``: write a commented settings file, a key-encryption key and the store.

It is all or nothing. Before writing anything it checks that the settings file does not exist
(``--force`` replaces it), that the store's driver is installed (a missing extra is one line
naming it) and that the settings it is about to write validate. It then writes the
key-encryption key (an existing key file is reused, never overwritten), creates the store and
finally links the settings file into place; if any step fails, what it wrote is removed, so a
rerun starts clean. Exit codes: 0 done, 2 usage or environment.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

import anyio

from agentguard._extras import import_extra
from agentguard.cli._errors import CommandError
from agentguard.cli._init_template import render, service_block
from agentguard.cli._kek_file import check_kek_file, write_kek
from agentguard.cli._operator import one_line
from agentguard.cli._target import Access, open_target
from agentguard.config import load_settings
from agentguard.errors import ConfigurationError
from agentguard.storage._protocols import StorageError
from agentguard.storage._urls import describe_store

__all__ = ["run"]

# store URL scheme -> the optional package its driver needs
_DRIVERS = {"postgresql": "asyncpg", "postgres": "asyncpg"}


class _Undo:
    """What init has written so far, removed again if it cannot finish."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.directories: list[Path] = []

    def mkdir(self, directory: Path) -> None:
        missing = [directory, *directory.parents]
        for parent in reversed([d for d in missing if not d.exists()]):
            parent.mkdir(mode=0o700)
            self.directories.append(parent)

    def rollback(self) -> None:
        for path in reversed(self.files):
            with suppress(FileNotFoundError):
                path.unlink()
        for directory in reversed(self.directories):
            with suppress(OSError):
                directory.rmdir()


def _as_written(path: Path, config_dir: Path) -> str:
    """``path`` as the settings file names it: relative to the file when it is below it."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(config_dir.resolve()))
    except ValueError:
        return str(absolute)


def _services(specs: list[str]) -> list[tuple[str, str]]:
    services = []
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            raise CommandError(
                f"--service {spec!r}: write NAME=URL, e.g. crm=https://api.crm.example"
            )
        services.append((name.strip(), url.strip()))
    return services


async def _create_store(url: str) -> bool:
    """Create the store at ``url`` unless it exists; whether it existed already."""
    target = argparse.Namespace(store=url, config=None)
    files = _sqlite_files(url)
    existed = files[0].exists() if files else not url.lower().startswith("memory:")
    if existed and not files:
        try:
            async with open_target(target, Access.READ_ONLY):
                pass
        except (ConfigurationError, StorageError, OSError):
            existed = False  # absent (or at an older version, which creating upgrades)
    async with open_target(target, Access.CREATE):
        pass
    return existed


def _sqlite_files(url: str) -> list[Path]:
    if not url.lower().startswith("sqlite:///"):
        return []
    path = Path(url[len("sqlite:///") :])
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))]


def _init(args: argparse.Namespace, undo: _Undo) -> int:
    path: Path = args.config
    if path.exists() and not args.force:
        raise CommandError(f"{path} exists; pass --force to replace it")
    args.store = args.store or os.environ.get("AGENTGUARD_STORE") or "sqlite:///agentguard.db"
    scheme = args.store.partition("://")[0].lower()
    if scheme in _DRIVERS:
        import_extra(_DRIVERS[scheme])  # before anything is written
    services = _services(args.service)
    kek_path: Path | None = None
    if not args.no_kek:
        kek_path = args.kek_file or path.parent / "agentguard.kek"
    undo.mkdir(path.parent)
    reused_kek = kek_path is not None and kek_path.exists()
    if kek_path is not None and reused_kek:
        check_kek_file(kek_path)
    elif kek_path is not None:
        undo.mkdir(kek_path.parent)
        write_kek(kek_path)
        undo.files.append(kek_path)
    text = render(
        origin=args.public_origin,
        store=args.store,
        kek_file=_as_written(kek_path, path.parent) if kek_path is not None else None,
        services=[service_block(name, url) for name, url in services],
    )
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    undo.files.append(Path(temporary))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    settings = load_settings(temporary, environ={})  # what the file says, not the environment
    url = settings.store.url
    new_store = [p for p in _sqlite_files(url) if not p.exists()]
    existed = anyio.run(_create_store, url)
    undo.files += new_store
    if args.force:
        os.replace(temporary, path)
    else:
        os.link(temporary, path)  # fails if the file appeared meanwhile: never clobbered
        os.unlink(temporary)
    undo.files.clear()
    undo.directories.clear()
    store = f"{'using the existing' if existed else 'created the'} store at {describe_store(url)}"
    _report(args, path, store, kek_path, reused_kek, [name for name, _ in services])
    return 0


def _report(  # noqa: PLR0917 - one call site, every fact it prints
    args: argparse.Namespace,
    path: Path,
    store: str,
    kek_path: Path | None,
    reused_kek: bool,
    services: list[str],
) -> None:
    print(f"wrote {path}")
    print(store)
    if kek_path is not None and reused_kek:
        print(f"using the existing key-encryption key in {kek_path}")
    elif kek_path is not None:
        print(
            f"wrote a new key-encryption key to {kek_path} (mode 0600); back it up: stored "
            "credentials cannot be decrypted without it"
        )
    else:
        print("no key-encryption key: set AGENTGUARD_KEK before storing credentials")
    service = services[0] if services else "crm"
    if not services:
        print(
            f"no services yet: add a [[services]] block to {path} (a commented example is in "
            "it), or rerun with --force --service NAME=URL"
        )
    flag = "" if path == Path("agentguard.toml") else f" --config {path}"
    origin = args.public_origin.rstrip("/")
    print("next:")
    for command in (
        f"agentguard serve --check{flag}",
        f"agentguard accounts add acme{flag}",
        f"agentguard workspaces add sales --account acme{flag}",
        f"agentguard users add alice --account acme --workspace sales "
        f"--grants {service}:read{flag}",
        f'printf %s "$VENDOR_KEY" | agentguard credentials set {service} --user alice{flag}',
        f"agentguard keys issue --user alice --workspace sales --out ./credentials.json "
        f"--token-url {origin}/oauth/token{flag}",
        f"agentguard serve{flag}",
    ):
        print(f"  {command}")


def run(args: argparse.Namespace) -> int:
    """Run ``init``: everything or, on any error, nothing."""
    undo = _Undo()
    try:
        return _init(args, undo)
    except FileExistsError as error:
        undo.rollback()
        where = error.filename2 or error.filename
        print(f"agentguard init: {where} exists; nothing was written", file=sys.stderr)
        return 2
    except (CommandError, ConfigurationError, StorageError, OSError, ValueError) as error:
        undo.rollback()
        print(f"agentguard init: {one_line(error)}", file=sys.stderr)
        return 2
    except BaseException:
        undo.rollback()
        raise
