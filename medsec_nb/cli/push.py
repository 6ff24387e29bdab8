"""``medsec push``: de-identify a study in memory and send it to a research PACS (docs/PACS.md)."""

from __future__ import annotations

import argparse
import sys

from .deid import OPTIONS, _secret, _unlock, _unlocking, _why
from .pull import add_dicomweb_auth, dicomweb_session

PUSH_EPILOG = """\
examples:
  medsec push CT_STUDY/ --to http://research-pacs:8042/dicom-web --secret-file project.secret --purpose HRESCH
  medsec push CT_STUDY/ --to https://research-pacs/dicom-web --token-file research.token \\
      --secret-file project.secret --purpose HRESCH
  medsec push study.msec -i site-a.key --to RESEARCH@research-pacs:4242 --secret-file project.secret \\
      --purpose HRESCH --option retain-long-modified-dates

The PS3.15 Basic Profile (plus --option), the burned-in check and the leak scan run over every
instance in memory first: any hit and nothing is sent. Nothing is written to disk. A destination is
a DICOMweb base URL (STOW-RS; credentials from --user/--password-file or --token-file, a URL shown
without user, password or query) or AE@HOST:PORT (C-STORE). The export and the transfer are recorded in
the audit log (deid-export, push: destination and counts).
"""


def add_push_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's own
    p = sub.add_parser(
        "push",
        help="De-identify a study in memory and send it to a research PACS (STOW-RS or C-STORE).",
        description="De-identify a study (PS3.15 Basic Profile + options, leak-scanned) and send it to a PACS.",
        epilog=PUSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --password must not be taken for --password-file
    )
    p.set_defaults(func=cmd_push)
    p.add_argument("source", metavar="SRC", help="DICOM file or folder, or an encrypted .msec study")
    p.add_argument(
        "--to", required=True, metavar="DEST", help="http[s]://HOST:PORT/dicom-web (STOW-RS) or AE@HOST:PORT (C-STORE)"
    )
    p.add_argument("--calling-ae", default="MEDSEC", metavar="AE", help="our AE title for C-STORE (default MEDSEC)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="STOW-RS: wait for the server (default 60)")
    add_dicomweb_auth(p)
    p.add_argument("--option", action="append", choices=OPTIONS, metavar="OPTION", help="a profile option (repeatable)")
    p.add_argument("--secret-file", metavar="F", help="project de-identification secret (>= 16 bytes)")
    p.add_argument("--mask-rules", metavar="FILE", help="burned-in text rectangles to blank (TOML or JSON)")
    p.add_argument("--allow-burned-in", action="store_true", help="send flagged instances no rule masks (audited)")
    p.add_argument(
        "--accept-leak-in", action="append", metavar="ELEMENT[:ORIGINAL]", help="as for medsec deid (audited)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _unlocking(p, "an encrypted SRC")
    _why(p)


def cmd_push(args: argparse.Namespace) -> int:
    import logging

    from ..pacs.push import push

    logging.getLogger("pynetdicom").addHandler(logging.NullHandler())
    logging.getLogger("pynetdicom").propagate = False
    report = push(
        args.source,
        args.to,
        calling_ae=args.calling_ae,
        progress=not args.quiet,
        session=dicomweb_session(args),
        timeout=args.timeout,
        options=args.option or (),
        secret=_secret(args),
        purpose=args.purpose,
        purpose_text=args.purpose_text,
        **_unlock(args),
        mask_rules=args.mask_rules,
        allow_burned_in=args.allow_burned_in,
        accept_leaks_in=args.accept_leak_in or (),
    )
    print(report.summary())
    print(f"sent {report.instances} de-identified instance(s) to {report.output}", file=sys.stderr)
    return 0
