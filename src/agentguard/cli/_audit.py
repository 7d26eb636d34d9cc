"""``agentguard audit``: keygen, checkpoint, verify, tail, export, prove.

Exit codes: 0 success (verify: there is a log and it is intact), 1 verify found tampering or
found nothing to vouch for (an empty log, an empty checkpoint directory), or ``checkpoint``
refused to sign, 2 usage or environment error (a missing store or checkpoint directory, a
missing key file). Every command here only reads the store and opens it read-only: a mistyped
store URL is an error, never a freshly created empty log. The store comes from ``--store``,
``$AGENTGUARD_STORE`` or the settings file (``--config``), as for every command.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Any

import anyio

from agentguard.audit import (
    Checkpointer,
    CheckpointRefused,
    DirectoryCheckpointSink,
    Ed25519Signer,
    export_log,
)
from agentguard.audit._chain import AuditEntry
from agentguard.audit._checkpoints import CheckpointError, NoteVerifier, open_checkpoint
from agentguard.audit._cosignatures import WitnessKey
from agentguard.audit._export import (
    ExportTally,
    check_manifest,
    export_pages,
    manifest_origin,
    read_export_notes,
    read_note_files,
    read_prefix,
)
from agentguard.audit._prefix import ArchivedPrefix
from agentguard.audit._sinks import note_size
from agentguard.audit._verify import Category, LogVerifier, VerifyReport
from agentguard.audit._verify_store import verify_store
from agentguard.cli._errors import CommandError
from agentguard.cli._output import emit_json, progress_printer
from agentguard.cli._target import Access, open_target, settings_for, store_url
from agentguard.errors import ConfigurationError
from agentguard.storage._protocols import StorageError
from agentguard.storage._urls import describe_store

__all__ = ["run"]


def _vkeys(args: argparse.Namespace) -> list[str]:
    keys = list(args.vkey)
    if args.vkeys_file is not None:
        keys += [line.strip() for line in args.vkeys_file.read_text().splitlines() if line.strip()]
    return keys


def _read_key(path: Path, name: str) -> Ed25519Signer:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CommandError(f"no signing key at {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CommandError(f"{path} is readable by others; run: chmod 600 {path}")
    try:
        return Ed25519Signer.from_pem(name, path.read_bytes())
    except ValueError:
        raise CommandError(f"{path} is not an Ed25519 PKCS#8 private key") from None


def _url(args: argparse.Namespace) -> str:
    return store_url(args, settings_for(args))


async def _with_store(args: argparse.Namespace, action: Any) -> Any:
    async with open_target(args, Access.READ_ONLY, settings_for(args)) as (store, url):
        try:
            return await action(store)
        except StorageError as error:
            raise CommandError(f"cannot read {describe_store(url)}: {error}") from None
        except OSError as error:
            raise CommandError(f"{error} (store: {describe_store(url)})") from None
        except Exception as error:
            if not type(error).__module__.startswith("asyncpg"):
                raise
            raise CommandError(
                f"cannot read {describe_store(url)}: {type(error).__name__}"
            ) from None


async def _read_all(store: Any) -> tuple[list[AuditEntry], ArchivedPrefix | None]:
    """The stored entries and, for a store that archived a prefix, the hashes it kept."""
    finder = getattr(store, "archived_prefix", None)
    prefix: ArchivedPrefix | None = await finder() if callable(finder) else None
    entries: list[AuditEntry] = await store.read()
    return entries, prefix


async def _entries(args: argparse.Namespace) -> tuple[list[AuditEntry], ArchivedPrefix | None]:
    found: tuple[list[AuditEntry], ArchivedPrefix | None] = await _with_store(args, _read_all)
    return found


def _notes(directory: Path | None) -> list[str]:
    """The notes in ``directory``; a directory that was named must exist."""
    if directory is None:
        return []
    if not directory.is_dir():
        raise CommandError(f"checkpoint directory {directory} does not exist")
    return read_note_files(directory)


def _keygen(args: argparse.Namespace) -> int:
    signer = Ed25519Signer.generate(args.name)
    try:
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{args.out} exists; refusing to overwrite a signing key") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(signer.private_pem())
    print(signer.vkey())
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    signer = _read_key(args.key, args.name)

    async def sign(store: Any) -> str:
        checkpointer = Checkpointer(
            store, signer, args.origin, DirectoryCheckpointSink(args.checkpoints)
        )
        note: str = await checkpointer.checkpoint()
        return note

    try:
        note = anyio.run(_with_store, args, sign)
    except CheckpointRefused as refusal:
        print(f"agentguard audit: checkpoint refused: {refusal}", file=sys.stderr)
        return 1
    print(note, end="")
    return 0


def _origins(notes: list[str]) -> list[str]:
    """The origin lines of ``notes`` (unverified), sorted."""
    return sorted({found[0] for note in notes if (found := note_size(note)) is not None})


def _anchor_problems(args: argparse.Namespace, notes: list[str], origin: str | None) -> list[str]:
    """Why the named checkpoint directory cannot anchor this log, if it cannot.

    A note vouches only for the log its origin line names (C2SP tlog-checkpoint: clients check
    the origin), so verifying against a directory needs the log's origin, and a directory
    holding no note of that origin (another log's directory) anchors nothing.
    """
    if args.checkpoints is None:
        return []
    if not notes:
        return [f"no signed checkpoints in {args.checkpoints}: nothing anchors the log"]
    found = _origins(notes)
    listed = ", ".join(found) or "none readable"
    if origin is None:
        return [
            f"--checkpoints needs the log's origin to know which notes vouch for it: pass "
            f"--origin or set AGENTGUARD_AUDIT_ORIGIN (notes in {args.checkpoints} are of: "
            f"{listed})"
        ]
    if origin not in found:
        return [
            f"no checkpoint of origin {origin} in {args.checkpoints}: it holds notes of "
            f"{listed}, which do not anchor this log"
        ]
    return []


def _witness_options(args: argparse.Namespace) -> tuple[list[str], int | None]:
    """``--witness`` vkeys (checked) and ``--quorum``; a usage error if they do not fit."""
    witnesses: list[str] = list(getattr(args, "witness", None) or [])
    quorum: int | None = getattr(args, "quorum", None)
    if quorum is not None and not witnesses:
        raise CommandError("--quorum needs the witnesses' keys: pass --witness VKEY")
    if quorum is not None and not 1 <= quorum <= len(witnesses):
        raise CommandError(
            f"--quorum {quorum} must be between 1 and the {len(witnesses)} --witness key(s)"
        )
    seen: dict[bytes, str] = {}
    for vkey in witnesses:
        try:
            key = WitnessKey.from_vkey(vkey)
        except CheckpointError as error:
            raise CommandError(f"--witness {vkey[:40]!r}: {error}") from None
        if key.public_key in seen:
            raise CommandError(
                f"--witness {key.name} is given twice (the same key as --witness "
                f"{seen[key.public_key]}): a witness counts once, so list each one once"
            )
        seen[key.public_key] = key.name
    return witnesses, quorum


def _witness_line(report: VerifyReport) -> str | None:
    found = report.witness
    if found is None:
        return None
    names = found.get("cosigned_by")
    listed = ", ".join(map(str, names)) if isinstance(names, list) and names else "none"
    verdict = "OK" if found.get("ok") else "FAIL"
    return (
        f"{verdict}: the newest checkpoint (size {found.get('size')}) is cosigned by "
        f"{len(names) if isinstance(names, list) else 0} of {found.get('given')} given "
        f"witness(es), {found.get('quorum')} required: {listed}"
    )


_SELF_VOUCHED = (
    "KEYS-FROM-EXPORT no --vkey given: the checkpoints were checked with {vkeys}, which came "
    "with the export itself. That proves the export consistent with itself, not that the "
    "operator's key signed it: whoever rewrote the events could have re-signed them with a key "
    "of their own. Pass --vkey (or --vkeys-file) with the log's key obtained out of band."
)


def _print_report(
    report: VerifyReport, problems: list[str], warnings: list[str], ok: bool, checked: str
) -> None:
    for finding in report.findings:
        print(finding.line())
    for problem in problems:
        print(f"FAIL {problem}")
    witnessed = _witness_line(report)
    if witnessed is not None:
        print(witnessed)
    for warning in warnings:
        print(f"WARN {warning}")
    truncated = any(f.category is Category.TRUNCATED for f in report.findings)
    unanchored = "" if truncated else " (truncation of the tail would go unnoticed)"
    if report.anchored:
        anchor = f"anchored at size {report.anchored_size}"
    elif report.anchored_size:
        anchor = (
            f"anchored at size {report.anchored_size}, seq {report.anchored_size}.."
            f"{report.size - 1} NOT anchored{unanchored}"
        )
    else:
        anchor = f"NOT anchored by any checkpoint{unanchored}"
    print(f"{'OK' if ok else 'FAIL'}: {report.size} events, {anchor}; checked {checked}")


def _trusted_sizes(notes: list[str], vkeys: list[str], origin: str | None) -> set[int]:
    """The sizes of the notes a trusted key signed (of ``origin``, when it is known)."""
    verifiers = [NoteVerifier.from_vkey(vkey) for vkey in vkeys]
    sizes: set[int] = set()
    for note in notes:
        try:
            checkpoint = open_checkpoint(note, verifiers)
        except CheckpointError:
            continue
        if origin is None or checkpoint.origin == origin:
            sizes.add(checkpoint.size)
    return sizes


def _verify(args: argparse.Namespace) -> int:
    witnesses, quorum = _witness_options(args)
    origin: str | None = args.origin
    problems: list[str] = []
    warnings: list[str] = []
    given = _vkeys(args)
    directory_notes = _notes(args.checkpoints)
    if args.export is not None:
        prefix = read_prefix(args.export)
        notes, export_vkeys = read_export_notes(args.export)
        where = [f"{len(notes)} checkpoint note(s) in {args.export / 'checkpoints'}"]
        vkeys = given or export_vkeys
        if not given and export_vkeys:
            warnings.append(_SELF_VOUCHED.format(vkeys=args.export / "vkeys.txt"))
        notes += directory_notes
        source = f"export {args.export}"
        origin = origin or manifest_origin(args.export)
    else:
        notes, vkeys = directory_notes, given
        source = describe_store(_url(args))
        where = []
    if args.checkpoints is not None:
        where.append(f"{len(directory_notes)} checkpoint note(s) in {args.checkpoints}")
    origin = origin or os.environ.get("AGENTGUARD_AUDIT_ORIGIN") or None
    if notes and not vkeys:
        raise CommandError("checkpoints need trusted verifier keys: pass --vkey or --vkeys-file")
    # Both sources stream in pages: memory stays bounded whatever the log's size.
    if args.export is not None:
        verifier = LogVerifier(
            notes, vkeys, origin=origin, prefix=prefix, witnesses=witnesses, quorum=quorum
        )
        tally = ExportTally(0 if prefix is None else prefix.size)
        for page in export_pages(args.export, tally):
            verifier.feed_bodies(page)
        report = verifier.finish()
        problems += check_manifest(args.export, tally)
        if not notes and tally.count:
            # An export is vouched for by signed notes only: without them anyone could have
            # rewritten it, chain and manifest alike.
            problems.append(
                f"no signed checkpoint in {args.export}/checkpoints or --checkpoints: nothing "
                "vouches for this export; pass --checkpoints with the log's checkpoint directory"
            )
    else:
        url = _url(args)

        async def streamed(store: Any) -> VerifyReport:
            return await verify_store(
                store,
                notes,
                vkeys,
                origin=origin,
                witnesses=witnesses,
                quorum=quorum,
                jobs=args.jobs,
                url=url,
            )

        report = anyio.run(_with_store, args, streamed)
    problems += _anchor_problems(args, notes, origin)
    if notes and report.size and _trusted_sizes(notes, vkeys, origin) == {0}:
        # A note of the empty log commits to no event: it vouches for nothing.
        problems.append(
            "the only trusted signed checkpoint is of size 0: it vouches for no event, so "
            "nothing anchors the log; sign one that covers it (audit checkpoint)"
        )
    if report.size == 0 and not args.allow_empty:
        problems.append(f"no events in {source}: nothing to verify (--allow-empty accepts that)")
    checked = source + (f" against {' and '.join(where)}" if notes or where else "")
    if origin is not None and notes:
        checked += f" (origin {origin})"
    if warnings:
        checked += " with the export's own vkeys.txt, not a key obtained out of band"
    return _conclude(args, report, problems, warnings, checked=checked, origin=origin)


def _conclude(
    args: argparse.Namespace,
    report: VerifyReport,
    problems: list[str],
    warnings: list[str],
    *,
    checked: str,
    origin: str | None,
) -> int:
    """Print the verify report (text or ``--json``); the exit code."""
    ok = report.ok and not problems
    if args.json:
        document = report.to_dict()
        document.update(
            ok=ok,
            checked=checked,
            problems=problems,
            warnings=warnings,
            origin=origin,
            vkeys_from_export=bool(warnings),
        )
        emit_json(document)
    else:
        _print_report(report, problems, warnings, ok, checked)
    return 0 if ok else 1


def _tail(args: argparse.Namespace) -> int:
    async def newest(store: Any) -> list[AuditEntry]:
        head = await store.head()
        if head is None:
            return []
        found: list[AuditEntry] = await store.read(max(0, head.seq + 1 - args.n))
        return found

    for entry in anyio.run(_with_store, args, newest):
        if args.json:
            print(entry.body.decode())
            continue
        event = entry.event()
        actor = event.get("actor") or {}
        who = actor.get("user") if isinstance(actor, dict) else None
        parts = [
            f"#{entry.seq}",
            str(event.get("ts")),
            str(event.get("action")),
            str(event.get("decision") or "-"),
            str(who or "-"),
            f"{event.get('method') or ''} {event.get('path') or ''}".strip() or "-",
            str(event.get("reason") or ""),
        ]
        print("  ".join(parts).rstrip())
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.tiles is not None:
        from agentguard.cli._audit_tiles import run as run_tiles

        return run_tiles(args)
    notes, vkeys = _notes(args.checkpoints), _vkeys(args)
    show = progress_printer("exported", sys.stderr.isatty())

    async def write(store: Any) -> int:
        count: int = await export_log(
            store, args.out, notes=notes, vkeys=vkeys, origin=args.origin, progress=show
        )
        return count

    count = anyio.run(_with_store, args, write)
    if show is not None:
        print(file=sys.stderr)
    print(f"exported {count} events to {args.out}")
    return 0


def _prove(args: argparse.Namespace) -> int:
    from agentguard.cli._audit_prove import run as run_prove

    return run_prove(args)


def _archive(args: argparse.Namespace) -> int:
    from agentguard.cli._audit_archive import run as run_archive

    return run_archive(args)


def run(args: argparse.Namespace) -> int:
    """Dispatch an ``audit`` subcommand; errors print one line and exit 2."""
    handlers = {
        "keygen": _keygen,
        "checkpoint": _checkpoint,
        "verify": _verify,
        "tail": _tail,
        "export": _export,
        "prove": _prove,
        "archive": _archive,
    }
    try:
        return handlers[args.audit_command](args)
    except (CommandError, ConfigurationError, StorageError, OSError, ValueError) as error:
        print(f"agentguard audit: {error}", file=sys.stderr)
        return 2
