"""The ``medsec`` command line for data stewards (a thin skin over the Python API).

Building the parser loads nothing heavy: each command imports the API it calls when it runs,
so ``medsec --help`` and ``medsec inspect`` never load pydicom, casbin or Jupyter
(tests/test_cli_start.py, bench/bench_cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NoReturn, TextIO

from ..core.errors import MedsecError
from ..core.reading import current_source
from ..core.version import __version__
from .audit import add_audit_commands
from .deid import add_deid_commands
from .keyservice import add_keyservice_command
from .options import keyservice_option, purpose_option
from .prompt import key_passphrase, prompt_secret, read_secret_file, unlock_args
from .pull import add_pull_command
from .push import add_push_command
from .receive import add_receive_command

#: ``medsec_nb.keys.KEY_TYPES``, spelled out so that building the parser does not load the
#: cryptography library (tests/test_cli_start.py keeps the two equal).
KEY_TYPES = ("x25519", "p256", "rsa3072", "ed25519")

MAIN_EPILOG = """\
typical session of a data steward:
  medsec keygen --out site-a                    # site-a.key (passphrase-protected) + site-a.pub
  medsec keygen --out producer --type ed25519   # a signing key
  medsec encrypt CT_STUDY/ -o study.msec -r site-a.pub -r site-b.pub --sign producer.key
  medsec inspect study.msec                     # public facts only: no patient data
  medsec verify study.msec -i site-a.key --require-signer producer.pub --purpose HRESCH
  medsec add-recipient study.msec -i site-a.key -r site-c.pub --purpose HRESCH
  medsec decrypt study.msec -i site-a.key -o EXPORT/ --purpose HRESCH   # explicit plaintext export
  medsec audit show --since 7d                  # who decrypted what, when and why
  medsec audit verify                           # the log's hash chain and signed checkpoints
  medsec deid CT_STUDY/ -o DEID/ --secret-file project.secret --purpose HRESCH   # PS3.15 de-identified copy

Every decryption is checked against the access policy ($MEDSEC_POLICY) and recorded in
the audit log ($MEDSEC_AUDIT_LOG) with its purpose of use (--purpose or $MEDSEC_PURPOSE).
Secrets are never command-line arguments: you are prompted, or scripts pass
--passphrase-file F (a study passphrase) and --key-passphrase-file F (a key file's).
Exit status: 0 success, 1 error (one line on stderr), 2 usage error.
Warnings (e.g. pydicom's about a malformed value) are one line each on stderr:
"medsec: warning: FILE: what", with the value itself left out.
Set MEDSEC_DEBUG=1 to see a traceback for unexpected errors.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unlock_args(args: argparse.Namespace) -> dict:
    """identity or passphrase, and purpose keyword arguments for the API."""
    out = (
        {"purpose": args.purpose, "purpose_text": args.purpose_text} if args.purpose_text else {"purpose": args.purpose}
    )
    if args.keyservice and not args.identity and not args.passphrase_file:
        return {**out, "keyservice": args.keyservice}
    return {**out, **unlock_args(args, args.container)}


# ---------------------------------------------------------------- commands


def cmd_keygen(args: argparse.Namespace) -> int:
    from ..keys.identity import generate_identity, save_identity

    ident = generate_identity(args.type)
    if args.unencrypted:
        pw = None
        print(
            "medsec: warning: writing an UNENCRYPTED private key; protect the file (mode 0600) "
            "and use it only for automation",
            file=sys.stderr,
        )
    elif args.key_passphrase_file:
        pw = read_secret_file(args.key_passphrase_file, "key passphrase")
    else:
        pw = prompt_secret(f"New passphrase for {args.out}.key", confirm=True)
    key_path, pub_path = save_identity(ident, args.out, pw, overwrite=args.force)
    print(f"{ident.key_id}\n  private: {key_path}\n  public:  {pub_path}")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    from ..container.header import inspect_study
    from ..container.writer import encrypt_study
    from ..keys.identity import load_identity

    signer = None
    if args.sign:
        signer = load_identity(args.sign, key_passphrase(args, args.sign))
    passphrase = None
    if args.passphrase_file:
        passphrase = read_secret_file(args.passphrase_file, "passphrase")
    elif args.passphrase:
        passphrase = prompt_secret(f"New passphrase for {args.output}", confirm=True)
    recipients: list[Any] = list(args.recipient or ())
    if args.to_keyservice:
        from ..access.hub_service import connect

        recipients += connect(args.to_keyservice).recipients()
    if not recipients and passphrase is None:
        raise MedsecError(
            "give at least one recipient (-r KEY.pub, --to-keyservice SOCKET) or --passphrase / --passphrase-file"
        )
    encrypt_study(
        args.source,
        args.output,
        recipients=recipients,
        passphrase=passphrase,
        signer=signer,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
    )
    info = inspect_study(args.output)
    print(
        f"wrote {args.output}: {info.instance_count} instances, {info.file_size} bytes, "
        f"{len(info.recipients)} recipient(s), signer {info.signer or 'none'}"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..container.header import inspect_study

    info = inspect_study(args.container)
    if args.json:
        print(json.dumps(asdict(info), indent=2))
    else:
        print("\n".join(info.lines()))
    return 0 if info.complete and info.signature_valid is not False else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from ..access.gate import verify_study

    rep = verify_study(
        args.container, **_unlock_args(args), require_signer=args.require_signer, progress=not args.quiet
    )
    print(
        f"OK {rep.path}: {rep.instance_count} instances, {rep.bytes_authenticated} bytes authenticated; "
        f"signer {rep.signer or 'none (unsigned)'}; opened with {rep.key_id}"
    )
    return 0


def cmd_add_recipient(args: argparse.Namespace) -> int:
    from ..access.gate import add_recipients

    added = add_recipients(args.container, args.recipient, **_unlock_args(args))
    if not added:
        print(f"{args.container}: every key given is already a recipient; nothing changed")
    for kid in added:
        print(f"added {kid}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from ..access.gate import rotate_study

    recipients: list[Any] = list(args.recipient or ())
    if args.to_keyservice:
        from ..access.hub_service import connect

        recipients += connect(args.to_keyservice).recipients()
    dest = rotate_study(args.container, recipients, args.output, **_unlock_args(args), progress=not args.quiet)
    print(f"wrote {dest}: a fresh study key for {len(recipients)} recipient(s); keys released before no longer open it")
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    from ..access.gate import decrypt_study

    files = decrypt_study(
        args.container, args.output, **_unlock_args(args), require_signer=args.require_signer, progress=not args.quiet
    )
    print(
        f"exported {len(files)} plaintext DICOM files to {args.output} "
        "(plaintext on disk: protect or delete it when done)"
    )
    return 0


# ---------------------------------------------------------------- parser


def _unlock_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("unlocking (one of; prompts for the study passphrase if none is given)")
    g.add_argument("-i", "--identity", metavar="KEY", help="your private key file (.key)")
    g.add_argument("--passphrase-file", metavar="F", help="file holding the study passphrase")
    keyservice_option(g, "ask the key service at SOCKET: no key file needed")
    p.add_argument(
        "--key-passphrase-file", metavar="F", help="file holding the passphrase of the key file (else you are prompted)"
    )
    w = p.add_argument_group("why (recorded in the audit log with every decryption)")
    purpose_option(w)
    w.add_argument("--purpose-text", metavar="TEXT", help="free-text reason, e.g. a protocol number")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="medsec",
        formatter_class=fmt,
        epilog=MAIN_EPILOG,
        description="Encrypt, inspect, verify, share and export DICOM studies as .msec containers.",
    )
    parser.add_argument("--version", action="version", version=f"medsec-nb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog="example:\n  " + example, formatter_class=fmt)
        p.set_defaults(func=func)
        return p

    p = add(
        "keygen",
        cmd_keygen,
        "Generate a key pair: PREFIX.key (private) and PREFIX.pub (public).",
        "medsec keygen --out site-a              # x25519 recipient key, passphrase prompted\n"
        "  medsec keygen --out producer --type ed25519\n"
        "  medsec keygen --out ci --unencrypted     # automation only",
    )
    p.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.key and PREFIX.pub")
    p.add_argument(
        "--type",
        choices=KEY_TYPES,
        default="x25519",
        help="x25519 (default), p256 or rsa3072 to receive studies; ed25519 (or p256) to sign",
    )
    p.add_argument("--unencrypted", action="store_true", help="write the private key without a passphrase")
    p.add_argument("--key-passphrase-file", metavar="F", help="read the new key's passphrase from F")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")

    p = add(
        "encrypt",
        cmd_encrypt,
        "Encrypt a DICOM study folder into one .msec container.",
        "medsec encrypt CT_STUDY/ -o study.msec -r site-a.pub -r site-b.pub --sign producer.key\n"
        "  medsec encrypt CT_STUDY/ -o study.msec --passphrase-file pw.txt",
    )
    p.add_argument("source", help="folder of DICOM files of one study (the folder is not modified)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="container to write (.msec)")
    p.add_argument("-r", "--recipient", action="append", metavar="KEY.pub", help="public key (repeatable)")
    p.add_argument(
        "--to-keyservice",
        metavar="SOCKET",
        help="also encrypt to the site keys of the key service at SOCKET (their public halves; no private key here)",
    )
    p.add_argument("--passphrase", action="store_true", help="protect with a passphrase (prompted)")
    p.add_argument("--passphrase-file", metavar="F", help="protect with the passphrase in F")
    p.add_argument("--sign", metavar="KEY", help="sign with this ed25519 or p256 private key")
    p.add_argument("--key-passphrase-file", metavar="F", help="passphrase of the signing key file")
    p.add_argument("--chunk-size", type=int, default=1 << 20, metavar="BYTES", help="default 1 MiB")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = add(
        "inspect",
        cmd_inspect,
        "Show a container's public header: no key needed, no patient data.",
        "medsec inspect study.msec",
    )
    p.add_argument("container")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "verify",
        cmd_verify,
        "Authenticate every byte of a container; writes no plaintext anywhere.",
        "medsec verify study.msec -i site-a.key --require-signer producer.pub --purpose HRESCH",
    )
    p.add_argument("container")
    _unlock_options(p)
    p.add_argument("--require-signer", metavar="KEY.pub", help="fail unless signed by this key")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = add(
        "add-recipient",
        cmd_add_recipient,
        "Give more public keys access; the payload is not re-encrypted.",
        "medsec add-recipient study.msec -i site-a.key -r site-c.pub --purpose HRESCH",
    )
    p.add_argument("container")
    p.add_argument("-r", "--recipient", action="append", required=True, metavar="KEY.pub")
    _unlock_options(p)

    p = add(
        "rotate",
        cmd_rotate,
        "Re-encrypt under a fresh study key for exactly these recipients (revokes released keys).",
        "medsec rotate study.msec -i site-a.key -r site-a.pub -r site-c.pub --purpose HRESCH",
    )
    p.add_argument("container")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: replace the container atomically)")
    p.add_argument("-r", "--recipient", action="append", metavar="KEY.pub", help="public key (repeatable)")
    p.add_argument("--to-keyservice", metavar="SOCKET", help="also encrypt to the key service's site keys")
    _unlock_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = add(
        "decrypt",
        cmd_decrypt,
        "Export the original DICOM files (plaintext!) to a new folder.",
        "medsec decrypt study.msec -i site-a.key -o EXPORT/ --purpose HRESCH",
    )
    p.add_argument("container")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="new (or empty) folder")
    _unlock_options(p)
    p.add_argument("--require-signer", metavar="KEY.pub", help="fail unless signed by this key")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    add_audit_commands(sub)
    add_deid_commands(sub)
    add_keyservice_command(sub)
    add_pull_command(sub)
    add_receive_command(sub)
    add_push_command(sub)
    return parser


_QUOTED = re.compile(r"(?<!\w)b?'[^']*'|(?<!\w)b?\"[^\"]*\"")
_LIBRARY_PATH = re.compile(r"\S*[/\\](?:site|dist)-packages[/\\]\S*")
_OWN_CODE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the medsec_nb package


def warning_line(message: Warning | str, filename: str) -> str:
    """A warning as one line naming the file being read: another library's quoted values (they
    may be patient data) and installation paths are left out."""
    text = " ".join(str(message).split())
    if not os.path.abspath(filename).startswith(_OWN_CODE + os.sep):
        text = _QUOTED.sub("<value>", text)
    text = _LIBRARY_PATH.sub("<library file>", text)[:300]
    where = current_source()
    return f"medsec: warning: {where}: {text}" if where else f"medsec: warning: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    shown: set[str] = set()

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = warning_line(message, filename)
        if text not in shown:  # the same warning about the same file: once
            shown.add(text)
            print(text, file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except MedsecError as exc:
        print(f"medsec: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("medsec: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"medsec: error: {where}{exc.strerror or exc}", file=sys.stderr)
    except Exception as exc:  # never a bare traceback for users
        if os.environ.get("MEDSEC_DEBUG"):
            raise
        print(f"medsec: internal error ({type(exc).__name__}); set MEDSEC_DEBUG=1 for details", file=sys.stderr)
    return 1
