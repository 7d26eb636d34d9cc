"""The ``agentguard audit`` argument parser (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentguard.cli._common_args import config_option, target_options

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``audit`` and its subcommands on the main parser's subparsers."""
    audit = commands.add_parser("audit", help="verify, inspect and anchor the audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    def store_option(parser: argparse.ArgumentParser) -> None:
        target_options(parser)  # read-only: a missing store is an error, never created

    def trust_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--checkpoints", type=Path, help="directory of signed checkpoint notes")
        parser.add_argument(
            "--vkey", action="append", default=[], help="trusted verifier key (repeatable)"
        )
        parser.add_argument(
            "--vkeys-file", type=Path, help="file with one trusted verifier key per line"
        )
        parser.add_argument(
            "--origin",
            help="the log's origin: only its checkpoints count (default "
            "$AGENTGUARD_AUDIT_ORIGIN; verify: or the export's manifest, needed with "
            "--checkpoints; prove: or the settings' audit.origin, always needed)",
        )

    keygen = sub.add_parser(
        "keygen", help="create an Ed25519 checkpoint signing key; print its vkey"
    )
    keygen.add_argument(
        "--name", required=True, help="key name in signatures, e.g. audit.example.com"
    )
    keygen.add_argument("--out", type=Path, required=True, help="PKCS#8 file to create (mode 0600)")
    config_option(keygen)

    checkpoint = sub.add_parser("checkpoint", help="sign a checkpoint of the log now")
    store_option(checkpoint)
    checkpoint.add_argument("--key", type=Path, required=True, help="signing key file from keygen")
    checkpoint.add_argument("--name", required=True, help="the key's name (as given to keygen)")
    checkpoint.add_argument("--origin", required=True, help="the log's origin line")
    checkpoint.add_argument(
        "--checkpoints", type=Path, required=True, help="directory to publish to"
    )

    verify = sub.add_parser("verify", help="walk the log and its checkpoints; exit 1 on tampering")
    store_option(verify)
    verify.add_argument("--export", type=Path, help="verify an export directory instead of a store")
    trust_options(verify)
    verify.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept a log with no events (a first run); checkpoints still count",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a trusted witness's cosignature/v1 verifier key (repeatable)",
    )
    verify.add_argument(
        "--quorum",
        type=int,
        help="how many of the --witness keys must have cosigned the newest checkpoint "
        "(default: 1 when --witness is given)",
    )
    verify.add_argument(
        "--jobs",
        type=_jobs,
        default=0,
        metavar="N",
        help="worker processes reading and hashing a store's log ahead of the verifier (1: "
        "none; default: one per CPU, at most 4, for a log of 200,000 events or more); the "
        "report is the same",
    )

    tail = sub.add_parser("tail", help="print the newest events")
    store_option(tail)
    tail.add_argument("-n", type=int, default=20, help="how many (default %(default)s)")
    tail.add_argument("--json", action="store_true", help="one JSON event per line")

    export = sub.add_parser("export", help="write the log, checkpoints and vkeys to a directory")
    store_option(export)
    written = export.add_mutually_exclusive_group(required=True)
    written.add_argument("--out", type=Path, help="directory to write (the JSON-lines export)")
    written.add_argument(
        "--tiles",
        type=Path,
        metavar="DIR",
        help="write the log as static C2SP tlog-tiles (checkpoint, tiles, entry bundles) "
        "that any static file server can host",
    )
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    trust_options(export)

    archive = sub.add_parser(
        "archive",
        help="export a verified, checkpoint-anchored segment, then drop it from the store",
        description="Verifies the log, exports the events below a signed checkpoint (the "
        "newest below the head, or --size) to a new directory in the export format, verifies "
        "the copy offline, and only then drops those rows, keeping the tree hashes that prove "
        "the kept tail's inclusion and consistency. The store must implement AuditArchiveStore "
        "(SQLite and PostgreSQL do); on PostgreSQL run it as the tables' owner.",
    )
    store_option(archive)
    trust_options(archive)
    archive.add_argument("--out", type=Path, required=True, help="new directory for the segment")
    archive.add_argument(
        "--size",
        type=int,
        help="archive up to this signed checkpoint size (default: the newest below the head)",
    )

    _prove_parser(sub, store_option, trust_options)


def _prove_parser(sub: Any, store_option: Any, trust_options: Any) -> None:
    prove = sub.add_parser("prove", help="inclusion proof of one event under the newest checkpoint")
    store_option(prove)
    prove.add_argument("seq", type=int, help="sequence number of the event")
    trust_options(prove)
    prove.add_argument(
        "--tlog",
        action="store_true",
        help="print the c2sp.org/tlog-proof@v1 text (the event goes alongside) instead of JSON",
    )
    prove.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write DIR/SEQ.tlog-proof and DIR/SEQ.event (the event's exact bytes): "
        "the pair a third party verifies offline with the log's vkey",
    )
    prove.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's cosignature/v1 key: of the notes of one size, prove under the one "
        "most of these witnesses validly cosigned (repeatable)",
    )


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of jobs: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("--jobs is between 1 and 64")
    return value
