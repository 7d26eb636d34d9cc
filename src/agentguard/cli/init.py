"""``agentguard init``: write a commented settings file and create its store.

Exit codes: 0 done, 2 usage or environment (the file exists without ``--force``, the store
cannot be created).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from pathlib import Path

import anyio

from agentguard.cli.operator import one_line
from agentguard.config import load_settings
from agentguard.errors import ConfigurationError
from agentguard.storage.protocols import StorageError
from agentguard.storage.urls import open_store

__all__ = ["TEMPLATE", "run"]

TEMPLATE = """\
# agentguard settings. Every value below may be overridden by an AGENTGUARD_* environment
# variable (AGENTGUARD_STORE, AGENTGUARD_PUBLIC_ORIGIN, AGENTGUARD_SERVER_PORT, ...).
# Secrets are never written here: they come from environment variables or 0600 files.
# Reference: docs/configuration.md

# The URL agents use to reach this gateway: DPoP proofs and metadata name it.
public_origin = {origin}

[store]
# sqlite:///relative/to/this/file.db, sqlite:////absolute.db, postgresql://user@host/db?schema=x
url = {store}

[keys]
access_ttl = 3600          # seconds an access key lives
refresh_ttl = 2592000      # seconds a refresh key lives (30 days)

[dpop]
enabled = true             # accept DPoP-bound keys (agentguard keys issue binds by default)
required = false           # true: refuse unbound keys and issue only bound ones

[server]
host = "127.0.0.1"
port = 8080
graceful_timeout = 30      # seconds in-flight requests may take to finish on SIGTERM

[logging]
level = "info"
format = "json"            # "json": one object per line with request ids; "text"
access_log = true

[audit]
# instance = "gateway-1"   # this process's name in audit events
# Signed checkpoints (make truncation detectable). The key: agentguard audit keygen.
# origin = "audit.example.com/agentguard/prod"
# checkpoint_key_file = "/etc/agentguard/audit.pem"     # mode 0600 (or AGENTGUARD_CHECKPOINT_KEY)
# checkpoint_dir = "/var/lib/agentguard/checkpoints"    # ideally an append-only mount
# checkpoint_interval = 60

[secrets]
# Files holding secrets, mode 0600; the environment variables win over them.
{kek_line}
# introspection_secrets_file = "/etc/agentguard/introspection"

# One [[services]] table per vendor API the gateway fronts at /<name>.
# [[services]]
# name = "crm"
# base_url = "https://api.crm.example/v2"
# placement = "header"       # "bearer" (Authorization), "header" or "query"
# parameter = "X-Api-Key"
#
# [[services]]
# name = "projects"
# base_url = "https://api.projects.example"
#
# A service whose vendor only issues admin keys: mint a user-scoped token (RFC 8693).
# [minters.projects]
# token_url = "https://api.projects.example/oauth/token"
"""


def _toml_string(value: str) -> str:
    return json.dumps(value)


def _write_kek(path: Path) -> None:
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{path} exists; refusing to overwrite a key-encryption key") from None
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(f"kek-1:{key}\n")


async def _create_store(url: str) -> None:
    store = open_store(url)
    try:
        initialize = getattr(store, "initialize", None)
        if initialize is not None:
            await initialize()
    finally:
        closer = getattr(store, "close", None)
        if closer is not None:
            await closer()


def _init(args: argparse.Namespace) -> int:
    path = args.config
    if path.exists() and not args.force:
        print(f"agentguard init: {path} exists; pass --force to replace it", file=sys.stderr)
        return 2
    kek_line = '# kek_file = "/etc/agentguard/kek"  # or AGENTGUARD_KEK="kek-1:BASE64URL_32_BYTES"'
    if args.kek_file is not None:
        _write_kek(args.kek_file)
        kek_line = f"kek_file = {_toml_string(str(args.kek_file.resolve()))}"
    text = TEMPLATE.format(
        origin=_toml_string(args.public_origin),
        store=_toml_string(args.store),
        kek_line=kek_line,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path, environ={})
    anyio.run(_create_store, settings.store.url)
    print(f"wrote {path}")
    print(f"created the store at {settings.store.url.split('?', 1)[0]}")
    if args.kek_file is not None:
        print(f"wrote a new key-encryption key to {args.kek_file} (mode 0600)")
    else:
        print("set AGENTGUARD_KEK (or rerun with --kek-file) before storing credentials")
    print(f"next: agentguard serve --config {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``init``."""
    try:
        return _init(args)
    except (ConfigurationError, StorageError, OSError, ValueError) as error:
        print(f"agentguard init: {one_line(error)}", file=sys.stderr)
        return 2
