"""``medsec deid`` and ``medsec reidentify`` (added to the main CLI; each command imports the
de-identification export when it runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..core.atomic import atomic_file
from ..core.errors import MedsecError
from .options import purpose_option
from .prompt import read_secret_file, unlock_args

#: ``medsec_nb.deid.OPTIONS``, sorted and spelled out so that building the parser does not load
#: pydicom (tests/test_cli_start.py keeps the two equal).
OPTIONS = (
    "clean-descriptors",
    "clean-graphics",
    "clean-structured-content",
    "retain-device-identity",
    "retain-institution-identity",
    "retain-long-full-dates",
    "retain-long-modified-dates",
    "retain-patient-characteristics",
    "retain-safe-private",
    "retain-uids",
)

DEID_EPILOG = (
    """\
what it does:
  Applies the DICOM PS3.15 Basic Application Level Confidentiality Profile (Table E.1-1, every
  attribute at every depth; private tags removed) plus the options you name, checks every instance
  for burned-in text, runs the leak scanner on every output (any hit: nothing is written), and
  prints a conformance report. SRC is a DICOM file, a folder, or an encrypted .msec study.
  Pseudonyms, new UIDs and date shifts are keyed by the project secret (--secret-file, >= 16 bytes):
  the same secret gives the same results in every export. Every export is checked against the
  access policy (action "export") and recorded in the audit log with its purpose.

examples:
  medsec deid CT_STUDY/ --dry-run --purpose HRESCH          # what would change, nothing written
  medsec deid CT_STUDY/ -o DEID/ --secret-file project.secret --purpose HRESCH
  medsec deid CT_STUDY/ -o DEID/ --secret-file project.secret --purpose HRESCH \\
      --option retain-long-modified-dates --option clean-descriptors --report deid-report.json
  medsec deid study.msec -i site-a.key -o deid.msec --encrypt -r site-b.pub \\
      --secret-file project.secret --purpose HRESCH        # container to container, no plaintext on disk
  medsec deid US_STUDY/ -o DEID/ --mask-rules us-masks.toml --secret-file project.secret --purpose HRESCH
  medsec deid CT_STUDY/ -o DEID/ --secret-file project.secret --purpose HRESCH \\
      --mapping deid-map.json --mapping-recipient steward.pub   # for authorised re-identification

options (--option, repeatable): """
    + ", ".join(OPTIONS)
    + """
burned-in text: instances with Burned In Annotation YES, ultrasound, secondary capture and other
  captures are refused unless a --mask-rules rule masks them or --allow-burned-in (audited) is given.
leaks: a refusal names the original attribute whose value is inside which output element (never the
  value) and the override that lets exactly that through, e.g. --accept-leak-in Manufacturer:InstitutionName.
See docs/DEID.md for the rule file format, the report and the mapping file.
"""
)

REID_EPILOG = """\
example:
  medsec reidentify deid-map.json -i steward.key --purpose HRESCH -o mapping.json
The policy must allow "reveal-tag" for the purpose; the read is recorded in the audit log.
"""


def _secret(args: argparse.Namespace) -> bytes | None:
    path = args.secret_file or os.environ.get("MEDSEC_DEID_SECRET_FILE")
    return read_secret_file(path, "de-identification secret") if path else None


def _unlock(args: argparse.Namespace) -> dict[str, Any]:
    """Unlocking arguments for an encrypted source (nothing for plain DICOM)."""
    if not str(args.source).lower().endswith(".msec"):
        return {}
    return unlock_args(args, args.source)


def cmd_deid(args: argparse.Namespace) -> int:
    from ..study.export import export_deidentified

    if args.recipient and not args.encrypt:
        raise MedsecError("-r/--recipient names who can open an encrypted output: add --encrypt")
    if args.encrypt and not args.recipient:
        raise MedsecError("--encrypt needs at least one recipient (-r KEY.pub)")
    if not args.dry_run and not args.output:
        raise MedsecError("give an output (-o DIR, or -o FILE.msec with --encrypt), or use --dry-run")
    mapping_recipients = args.mapping_recipient or (args.recipient if args.encrypt else None)
    if args.mapping and not mapping_recipients:
        raise MedsecError("--mapping is written encrypted: give --mapping-recipient KEY.pub")
    report = export_deidentified(
        args.source,
        args.output,
        options=args.option or (),
        secret=_secret(args),
        purpose=args.purpose,
        purpose_text=args.purpose_text,
        **_unlock(args),
        recipients=args.recipient or (),
        dry_run=args.dry_run,
        mask_rules=args.mask_rules,
        allow_burned_in=args.allow_burned_in,
        accept_leaks_in=args.accept_leak_in or (),
        mapping=args.mapping,
        mapping_recipients=mapping_recipients,
        progress=not args.quiet,
    )
    if args.dry_run:
        for line in report.diff_lines():
            print(line)
    print(report.summary())
    if args.report:
        with atomic_file(args.report, mode=0o600) as fh:
            fh.write((json.dumps(report.to_json(), indent=2) + "\n").encode("utf-8"))
        print(f"conformance report: {args.report}", file=sys.stderr)
    if args.mapping and not args.dry_run:
        print(f"mapping (encrypted): {args.mapping}", file=sys.stderr)
    return 0


def cmd_reidentify(args: argparse.Namespace) -> int:
    from ..study.export import read_mapping

    mapping = read_mapping(
        args.mapping, **unlock_args(args, args.mapping), purpose=args.purpose, purpose_text=args.purpose_text
    )
    data = (json.dumps(mapping, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if args.output:
        with atomic_file(args.output, mode=0o600, overwrite=False) as fh:
            fh.write(data)
        print(
            f"wrote the mapping of {len(mapping.get('patients', {}))} patient(s) to {args.output} "
            "(identifying: protect or delete it when done)",
            file=sys.stderr,
        )
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _why(p: argparse.ArgumentParser) -> None:
    w = p.add_argument_group("why (recorded in the audit log)")
    purpose_option(w)
    w.add_argument("--purpose-text", metavar="TEXT", help="free-text reason, e.g. a protocol number")


def _unlocking(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(f"unlocking {what} (one of; prompts for its passphrase if neither is given)")
    g.add_argument("-i", "--identity", metavar="KEY", help="your private key file (.key)")
    g.add_argument("--passphrase-file", metavar="F", help="file holding its passphrase")
    p.add_argument("--key-passphrase-file", metavar="F", help="file holding the passphrase of the key file")


def add_deid_commands(subparsers: Any) -> None:
    """Add ``deid`` and ``reidentify`` to the main parser's ``subparsers``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "deid",
        help="De-identify a study (PS3.15 Basic Profile + options) to DICOM or .msec.",
        description="De-identify a study with the DICOM PS3.15 Basic Profile and its options.",
        epilog=DEID_EPILOG,
        formatter_class=fmt,
    )
    p.set_defaults(func=cmd_deid)
    p.add_argument("source", metavar="SRC", help="DICOM file or folder, or an encrypted .msec study")
    p.add_argument("-o", "--output", metavar="OUT", help="new folder of DICOM files, or new .msec with --encrypt")
    p.add_argument(
        "--profile",
        choices=("basic",),
        default="basic",
        help="the Basic Application Level Confidentiality Profile (the only profile)",
    )
    p.add_argument(
        "--option",
        action="append",
        choices=OPTIONS,
        metavar="OPTION",
        help="a profile option (repeatable); see the list below",
    )
    p.add_argument(
        "--secret-file",
        metavar="F",
        help="project de-identification secret (>= 16 bytes); default $MEDSEC_DEID_SECRET_FILE; optional for --dry-run",
    )
    p.add_argument("--encrypt", action="store_true", help="write a new encrypted container instead of DICOM files")
    p.add_argument("-r", "--recipient", action="append", metavar="KEY.pub", help="recipient of --encrypt (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the per-element diff and the report; write nothing")
    p.add_argument("--mask-rules", metavar="FILE", help="burned-in text rectangles to blank (TOML or JSON)")
    p.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="export flagged instances no rule masks (each override is audited)",
    )
    p.add_argument(
        "--accept-leak-in",
        action="append",
        metavar="ELEMENT[:ORIGINAL]",
        help="let leak-scanner hits through: ELEMENT:ORIGINAL only ORIGINAL's value inside ELEMENT "
        "(as a refusal names it, e.g. Manufacturer:InstitutionName), ELEMENT any value there; "
        "keywords or gggg,eeee; repeatable; listed in the report and the audit record",
    )
    p.add_argument("--report", metavar="FILE", help="also write the conformance report as JSON")
    p.add_argument("--mapping", metavar="FILE", help="write the re-identification mapping, encrypted")
    p.add_argument(
        "--mapping-recipient",
        action="append",
        metavar="KEY.pub",
        help="who may read --mapping (repeatable; default the -r recipients)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _unlocking(p, "an encrypted SRC")
    _why(p)

    p = subparsers.add_parser(
        "reidentify",
        help="Decrypt an export's mapping (audited re-identification).",
        description="Decrypt the pseudonym/UID/date-shift mapping written by medsec deid --mapping.",
        epilog=REID_EPILOG,
        formatter_class=fmt,
    )
    p.set_defaults(func=cmd_reidentify)
    p.add_argument("mapping", metavar="MAPPING", help="mapping file written by medsec deid --mapping")
    p.add_argument("-o", "--output", metavar="FILE", help="write the mapping here (default: standard output)")
    _unlocking(p, "the mapping")
    _why(p)
