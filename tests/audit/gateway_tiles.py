"""A gateway whose operator listener serves the audit log's tiles (for the tile tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentguard.audit import Ed25519Signer
from agentguard.config import load_settings
from agentguard.gateway import Gateway, build_gateway
from tests.audit.support import ORIGIN
from tests.product.conftest import new_kek


def tile_gateway(
    tmp_path: Path,
    tiles: str,
    *,
    store: Any = None,
    store_url: str = "memory://",
    witnesses: str = "",
) -> tuple[Gateway, Ed25519Signer]:
    """A gateway with checkpoints in ``tmp_path/checkpoints`` and ``[audit] tiles = tiles``."""
    key = tmp_path / "checkpoint.pem"
    signer = Ed25519Signer.generate(ORIGIN.split("/", 1)[0])
    if not key.exists():
        key.write_bytes(signer.private_pem())
        os.chmod(key, 0o600)
    else:
        signer = Ed25519Signer.from_pem(ORIGIN.split("/", 1)[0], key.read_bytes())
    config = tmp_path / "agentguard.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\n\n[audit]\norigin = "{ORIGIN}"\n'
        f'checkpoint_dir = "{tmp_path / "checkpoints"}"\ncheckpoint_key_file = "{key}"\n'
        f'tiles = "{tiles}"\n{witnesses}'
    )
    environ = {"AGENTGUARD_PUBLIC_ORIGIN": "http://gw.test", "AGENTGUARD_KEK": new_kek()}
    settings = load_settings(config, environ=environ)
    return build_gateway(settings, store=store), signer
