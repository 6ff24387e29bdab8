"""``medsec audit``: show, verify, checkpoint and export the audit log (added to the main CLI;
each command imports the audit package when it runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ..core.atomic import atomic_file
from ..core.errors import AuditIntegrityError
from .prompt import key_passphrase

if TYPE_CHECKING:
    from ..audit.log import AuditLog

AUDIT_EPILOG = """\
examples:
  medsec audit show --since 7d                      # the last week's records
  medsec audit show --study 1.2.840.113619.2.55.3 --json
  medsec audit verify                               # every record's hash and link, every checkpoint
  medsec audit verify --strict --public-key steward.pub   # fail on records no checkpoint covers
  medsec audit checkpoint                           # sign the current chain head now (after each session)
  medsec audit export --format fhir -o audit.json   # FHIR R4 AuditEvent bundle

The log is --log FILE, else $MEDSEC_AUDIT_LOG, else audit.jsonl in the medsec data folder.
Its signed checkpoints go to --checkpoints FILE, else $MEDSEC_AUDIT_CHECKPOINTS, else the
log's name with the suffix .checkpoints. See docs/AUDIT.md.
"""


def _log(args: argparse.Namespace) -> AuditLog:
    from ..audit.log import AuditLog

    return AuditLog(args.log, checkpoints=args.checkpoints)


def _service(args: argparse.Namespace) -> Any:
    """The key service whose log to use: ``--keyservice``, else ``$MEDSEC_KEYSERVICE`` unless a
    ``--log`` is given; None for a local log."""
    path = args.keyservice or (None if args.log else os.environ.get("MEDSEC_KEYSERVICE"))
    if not path:
        return None
    from ..access.hub_service import connect

    return connect(path)


def _filtered(args: argparse.Namespace) -> list[dict[str, Any]]:
    service = _service(args)
    if service is None:
        return list(_log(args).records(study=args.study, user=args.user, since=args.since))
    records = service.call("records", study=args.study, since=args.since)["records"]  # own, or all for a steward
    return [r for r in records if args.user is None or r.get("who", {}).get("os_user") == args.user]


def _line(rec: dict[str, Any]) -> str:
    who, study = rec["who"], rec.get("study") or {}
    user = who["os_user"] + (f" (claims hub:{who['hub_user']})" if who.get("hub_user") else "")
    target = study.get("study_uid") or (study.get("container_sha256") or "-")[:16]
    n = "" if study.get("instances") is None else f" [{study['instances']}]"
    return (
        f"{rec['seq']:>6}  {rec['time'][:19]}Z  {user:<16} {rec['action']:<13} {rec['outcome']:<8} "
        f"{rec['why']['purpose']:<8} {target}{n}"
    )


def cmd_show(args: argparse.Namespace) -> int:
    records = _filtered(args)
    if args.json:
        for rec in records:
            print(json.dumps(rec, sort_keys=True))
        return 0
    print(f"{'SEQ':>6}  {'TIME (UTC)':<20}  {'USER':<16} {'ACTION':<13} {'OUTCOME':<8} {'PURPOSE':<8} STUDY")
    for rec in records:
        print(_line(rec))
    print(f"{len(records)} record(s)", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    service = _service(args)
    if service is not None:
        result = service.call("verify")
        if not result.get("valid"):
            raise AuditIntegrityError(str(result.get("message")))
        if args.strict and result.get("uncovered"):
            raise AuditIntegrityError(f"{result.get('message')} (--strict: every record must be covered)")
        print(
            f"OK {result.get('message')} (the key service's log, checked by the service against its own "
            "checkpoint key; pin that key and verify a copy of the log to check the service too)"
        )
        return 0
    from ..audit.verify import verify_log

    report = verify_log(args.log, args.checkpoints, args.public_key or None)
    if not report.ok:
        raise AuditIntegrityError(report.message)
    if args.strict and report.uncovered:
        raise AuditIntegrityError(f"{report.message} (--strict: every record must be covered by a signed checkpoint)")
    print(f"OK {report.message}")
    for warning in report.warnings:
        print(f"medsec: warning: {warning}", file=sys.stderr)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    service = _service(args)
    if service is not None:
        cp = service.call("checkpoint")
        print(f"checkpoint of {cp['size']} records signed by the key service ({cp['key_id']})")
        return 0
    from ..keys.identity import load_identity

    identity = None
    if args.identity:
        identity = load_identity(args.identity, key_passphrase(args, args.identity))
    cp = _log(args).checkpoint(identity, co_sign=args.co_sign)
    print(cp["note"], end="")
    print(
        f"checkpoint of {cp['size']} records signed by {' and '.join(cp['signers'])} appended to "
        f"{cp['path']}; keep a copy elsewhere too",
        file=sys.stderr,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..audit import export
    from ..audit.record import utc_now

    records = _filtered(args)
    if args.format == "fhir":
        data = (json.dumps(export.fhir_bundle(records, utc_now()), indent=2) + "\n").encode("utf-8")
        what = "FHIR R4 AuditEvent bundle"
    else:
        data = export.dicom_xml(records)
        what = "DICOM PS3.15 audit messages"
    if not args.output:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    with atomic_file(args.output, mode=0o600) as fh:
        fh.write(data)
    print(f"wrote {len(records)} record(s) to {args.output} ({what})")
    return 0


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", metavar="UID", help="only this Study Instance UID (or container SHA-256)")
    p.add_argument("--user", metavar="U", help="only this OS or JupyterHub user")
    p.add_argument(
        "--since",
        metavar="T",
        help="only records at or after T: 2025-01-31, 2025-01-31T14:00 "
        "(UTC unless an offset is given) or an age such as 30m, 12h, 7d",
    )


def add_audit_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``audit`` and its subcommands to the main parser's ``subparsers``; return its parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    audit = subparsers.add_parser(
        "audit",
        help="Show, verify, checkpoint and export the audit log.",
        description="Show, verify, checkpoint and export the tamper-evident audit log.",
        epilog=AUDIT_EPILOG,
        formatter_class=fmt,
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog="example:\n  " + example, formatter_class=fmt)
        p.set_defaults(func=func)
        p.add_argument(
            "--log", metavar="FILE", help="the audit log (default: $MEDSEC_AUDIT_LOG, else the data folder's)"
        )
        p.add_argument("--checkpoints", metavar="FILE", help="its checkpoint file (default: beside the log)")
        p.add_argument(
            "--keyservice",
            metavar="SOCKET",
            help="the key service's log instead (default $MEDSEC_KEYSERVICE when no --log is given): "
            "your own records, every record for a steward",
        )
        return p

    p = add(
        "show",
        cmd_show,
        "List audit records, oldest first (the chain is not checked: use verify).",
        "medsec audit show --user alice --since 2025-01-01\n"
        "  medsec audit show --study 1.2.840.113619.2.55.3 --json | jq .outcome",
    )
    _filters(p)
    p.add_argument("--json", action="store_true", help="one JSON record per line")

    p = add(
        "verify",
        cmd_verify,
        "Check every record's hash and chain link and every signed checkpoint; names the first bad line.",
        "medsec audit verify --strict --public-key steward-audit.pub",
    )
    p.add_argument(
        "--public-key",
        action="append",
        metavar="KEY.pub",
        help="trusted ed25519 checkpoint key, a copy kept away from the log (repeatable; default: "
        "this installation's, which its owner can replace: a warning says so)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail when records after the latest signed checkpoint (or all, without one) are not "
        "covered (default: a warning, exit 0)",
    )

    p = add(
        "checkpoint",
        cmd_checkpoint,
        "Sign the current chain head (size and last hash) and append it "
        "to the checkpoint file; prints the signed note.",
        "medsec audit checkpoint --identity steward-audit.key > head-$(date +%F).txt",
    )
    p.add_argument(
        "--identity",
        metavar="KEY",
        help="ed25519 private key to sign with (default: this installation's checkpoint key, created on first use)",
    )
    p.add_argument("--key-passphrase-file", metavar="F", help="file holding the passphrase of --identity")
    p.add_argument(
        "--co-sign",
        action="store_true",
        help="with --identity: also sign with this installation's "
        "checkpoint key, so that a plain `medsec audit verify` counts the note too",
    )

    p = add(
        "export",
        cmd_export,
        "Export records as a FHIR R4 AuditEvent bundle or DICOM PS3.15 audit messages.",
        "medsec audit export --format fhir -o audit.json\n"
        "  medsec audit export --format dicom --since 30d -o audit.xml",
    )
    p.add_argument("--format", required=True, choices=("fhir", "dicom"), help="fhir (JSON) or dicom (XML)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    _filters(p)
    return audit
