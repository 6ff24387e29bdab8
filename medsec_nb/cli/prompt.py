"""Asking for secrets on the command line: files for scripts, hidden prompts for people."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import MedsecError


def read_secret_file(path: str, what: str) -> bytes:
    """The secret in file ``path`` without its final newline."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MedsecError(f"{path}: cannot read {what} file ({exc.strerror})") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise MedsecError(f"{path}: {what} file is empty")
    return data


def prompt_secret(label: str, confirm: bool = False) -> bytes:
    """Ask on the terminal without echo; refuse when there is no terminal (never hang)."""
    if not sys.stdin.isatty():
        raise MedsecError(f"{label}: no terminal to prompt on; pass it in a file (see --help)")
    first = getpass.getpass(f"{label}: ")
    if confirm and getpass.getpass(f"{label} (again): ") != first:
        raise MedsecError("the two passphrases differ")
    if not first:
        raise MedsecError("empty passphrase")
    return first.encode("utf-8")


def key_passphrase(args: argparse.Namespace, key_path: str) -> Callable[[], bytes]:
    """A callable asked only if the key file is encrypted."""

    def get() -> bytes:
        if getattr(args, "key_passphrase_file", None):
            return read_secret_file(args.key_passphrase_file, "key passphrase")
        return prompt_secret(f"Passphrase for key {key_path}")

    return get


def unlock_args(args: argparse.Namespace, target: str) -> dict[str, Any]:
    """``identity`` (``args.identity``, its passphrase asked only if needed) or ``passphrase``
    (``args.passphrase_file``, else asked for ``target``): keyword arguments for the API."""
    from ..keys.identity import load_identity

    if args.identity:
        return {"identity": load_identity(args.identity, key_passphrase(args, args.identity))}
    if args.passphrase_file:
        return {"passphrase": read_secret_file(args.passphrase_file, "passphrase")}
    return {"passphrase": prompt_secret(f"Passphrase for {target}")}
