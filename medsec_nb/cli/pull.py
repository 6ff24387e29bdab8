"""``medsec pull``: a study from a PACS (DICOMweb or DIMSE) straight into a container (docs/PACS.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.errors import MedsecError
from .options import keyservice_option, purpose_option
from .prompt import key_passphrase, read_secret_file

PULL_EPILOG = """\
examples:
  medsec pull --dicomweb https://pacs.example/dicom-web --study-uid 1.2.840.113619.2.5.1 \\
      -o study.msec -r site-a.pub --purpose TREAT
  medsec pull --dicomweb https://pacs.example/dicom-web --user steward --password-file pacs.pw \\
      --accession A12345 -o study.msec -r site-a.pub --purpose TREAT                # HTTP basic
  medsec pull --dimse ORTHANC@pacs.example:4242 --calling-aet MEDSEC --accession A12345 \\
      -o study.msec --to-keyservice /run/medsec/keyservice.sock --purpose HRESCH     # C-GET
  medsec pull --dimse ORTHANC@pacs.example:4242 --calling-aet MEDSEC --move-to 0.0.0.0:11113 \\
      --patient-id P0042 -o study.msec -r site-a.pub --purpose HRESCH                  # C-MOVE

Exactly one study must match the query. Every instance goes from the network into the container
in memory: no plaintext file is written, and memory does not grow with the study. If the transfer
fails part-way nothing is written and the error names the instances that did not arrive: run the
same command again (there is no resume; a pull is cheap to retry). With --move-to, the PACS must
know the calling AE title at that address (C-MOVE sends the study to it); without it, C-GET is used.
DICOMweb credentials come from files (--password-file, --token-file), never from the command line;
a URL is shown and recorded without any user, password or query. The PACS's answer is checked, not
trusted: each instance must be of the study found, hold the accession number or patient ID asked for,
and be at most --max-instance-mb. The pull is recorded in the audit log (action "pull") with its
purpose of use. The access policy must allow you "pull" of the study (and
"pull-by-patient" for --patient-id) before anything is fetched; with --keyservice SOCKET the key
service decides and its log records.
"""


def dicomweb_session(args: argparse.Namespace) -> Any:
    """The requests session for ``--user``/``--password-file`` or ``--token-file`` (secrets read from files)."""
    from ..pacs.dicomweb import auth_session

    if args.user is not None:
        if not args.password_file:
            raise MedsecError("--user needs --password-file (a password is never given on the command line)")
        return auth_session(args.user, read_secret_file(args.password_file, "password").decode("utf-8", "replace"))
    if args.token_file:
        return auth_session(token=read_secret_file(args.token_file, "token").decode("utf-8", "replace"))
    if args.password_file:
        raise MedsecError("--password-file needs --user")
    return None


def add_dicomweb_auth(p: argparse.ArgumentParser) -> None:
    """The DICOMweb authentication options (shared by pull and push)."""
    group = p.add_argument_group("DICOMweb authentication (secrets only from files)")
    auth = group.add_mutually_exclusive_group()
    auth.add_argument("--user", metavar="NAME", help="HTTP basic user (with --password-file)")
    auth.add_argument("--token-file", metavar="F", help="file holding a bearer token")
    group.add_argument("--password-file", metavar="F", help="file holding the HTTP basic password")


def _dimse_address(text: str) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` as (AE title, host, port)."""
    aet, at, rest = text.partition("@")
    host, colon, port = rest.rpartition(":")
    if not (aet and at and host and colon and port.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: give the peer as AET@HOST:PORT, e.g. ORTHANC@pacs.example:4242")
    return aet, host, int(port)


def _listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not (host and colon and port.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: give the address to listen on as HOST:PORT, e.g. 0.0.0.0:11113")
    return host, int(port)


def cmd_pull(args: argparse.Namespace) -> int:
    from ..pacs.peer import StudyQuery
    from ..pacs.pull import pull_study

    recipients: list[Any] = list(args.recipient or ())
    if args.to_keyservice:
        from ..access.hub_service import connect

        recipients += connect(args.to_keyservice).recipients()
    if not recipients:
        raise MedsecError("give at least one recipient (-r KEY.pub or --to-keyservice SOCKET)")
    signer = None
    if args.sign:
        from ..keys.identity import load_identity

        signer = load_identity(args.sign, key_passphrase(args, args.sign))
    query = StudyQuery(study_uid=args.study_uid, accession=args.accession, patient_id=args.patient_id)
    session = dicomweb_session(args)
    if args.dicomweb:
        from ..pacs.dicomweb import DicomWeb

        peer: Any = DicomWeb(
            args.dicomweb,
            session=session,
            timeout=args.timeout,
            max_time=args.max_time,
            max_instance=args.max_instance_mb << 20,
        )
    else:
        from ..pacs.dimse import Dimse

        if session is not None:
            raise MedsecError("--user and --token-file are for --dicomweb (a DIMSE peer knows us by AE title)")
        aet, host, port = args.dimse
        peer = Dimse(
            host, port, aet, args.calling_aet, move_to=args.move_to, timeout=args.timeout, max_time=args.max_time
        )
    dest = pull_study(
        peer,
        query,
        args.output,
        recipients,
        signer=signer,
        purpose=args.purpose,
        progress=not args.quiet,
        keyservice=args.keyservice,
    )
    print(f"wrote {dest}: study pulled from {peer}, {len(recipients)} recipient(s)")
    return 0


def add_pull_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's own
    help_ = "Pull one study from a PACS (DICOMweb or DIMSE) straight into an encrypted container."
    p = sub.add_parser(
        "pull",
        help=help_,
        description=help_,
        epilog=PULL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --password must not be taken for --password-file
    )
    p.set_defaults(func=cmd_pull)
    src = p.add_argument_group("the PACS (one of)").add_mutually_exclusive_group(required=True)
    src.add_argument("--dicomweb", metavar="URL", help="a DICOMweb service root (QIDO-RS and WADO-RS)")
    src.add_argument(
        "--dimse", metavar="AET@HOST:PORT", type=_dimse_address, help="a DIMSE peer (C-FIND, then C-GET or C-MOVE)"
    )
    p.add_argument("--calling-aet", default="MEDSEC", metavar="AET", help="our AE title (default MEDSEC)")
    p.add_argument(
        "--move-to",
        metavar="HOST:PORT",
        type=_listen_address,
        help="retrieve by C-MOVE to a temporary storage SCP listening here (default: C-GET)",
    )
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="network timeout in seconds (default 60)")
    p.add_argument("--max-time", type=float, metavar="S", help="give up a retrieve that takes longer (default: none)")
    p.add_argument(
        "--max-instance-mb",
        type=int,
        default=1024,
        metavar="MB",
        help="refuse a DICOMweb instance larger than this (default 1024; memory holds one instance)",
    )
    add_dicomweb_auth(p)
    q = p.add_argument_group("the study (one of)").add_mutually_exclusive_group(required=True)
    q.add_argument("--study-uid", metavar="UID", help="Study Instance UID")
    q.add_argument("--accession", metavar="NUMBER", help="accession number")
    q.add_argument("--patient-id", metavar="ID", help="patient ID (exactly one study of the patient must exist)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="container to write (.msec)")
    p.add_argument("-r", "--recipient", action="append", metavar="KEY.pub", help="public key (repeatable)")
    p.add_argument("--to-keyservice", metavar="SOCKET", help="also encrypt to the key service's site keys")
    keyservice_option(p, "the key service whose policy decides and whose log records")
    p.add_argument("--sign", metavar="KEY", help="sign with this ed25519 or p256 private key")
    p.add_argument("--key-passphrase-file", metavar="F", help="passphrase of the signing key file")
    purpose_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
