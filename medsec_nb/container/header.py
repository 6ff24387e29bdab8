"""The public header of a container, read without any key: what ``inspect`` shows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import FormatError, SignatureError, shown
from ..keys.scrypt import is_passphrase
from . import signing
from .files import LocalFile
from .format import Header, decode_header
from .stanzas import stanza_summary


def read_header(path: str | os.PathLike[str]) -> tuple[Header, int]:
    """Parse the public header of ``path`` without any key; returns (header, file size)."""
    f = LocalFile(Path(path))
    try:
        return decode_header(f.read, str(path)), f.size
    finally:
        f.close()


@dataclass(frozen=True)
class ContainerInfo:
    """What ``inspect`` shows: public, no patient data."""

    path: str
    version: int
    instance_count: int
    file_size: int
    payload_length: int
    chunk_size: int
    recipients: list[str]  # key ids (or "passphrase (...)")
    passphrase: bool
    signer: str | None
    signature_valid: bool | None  # over the public body; None when unsigned
    complete: bool  # file size matches the header

    def lines(self) -> list[str]:
        sig = "none"
        if self.signer:
            sig = f"{self.signer} ({'valid over header' if self.signature_valid else 'INVALID'})"
        return [
            f"file:            {self.path}",
            f"format:          medsec container v{self.version} (AES-256-GCM, HKDF-SHA256)",
            f"instances:       {self.instance_count}",
            f"size:            {self.file_size} bytes (payload {self.payload_length}, chunk {self.chunk_size})"
            + ("" if self.complete else "  ** size does not match header: truncated or extended **"),
            "recipients:      " + ("\n                 ".join(self.recipients)),
            f"signer:          {sig}",
        ]


def inspect_study(path: str | os.PathLike[str]) -> ContainerInfo:
    """Public facts about a container: version, counts, sizes, recipient key ids, signer."""
    header, size = read_header(path)
    signer, valid = None, None
    if header.signature is not None:
        signer = shown(header.signature.get("kid"))
        try:
            signing.verify(header.signature, header.signed_message(), str(path))
            valid = True
        except (SignatureError, FormatError):
            valid = False
    b = header.body
    return ContainerInfo(
        path=str(path),
        version=header.version,
        instance_count=b.instance_count,
        file_size=size,
        payload_length=b.payload_length,
        chunk_size=b.chunk_size,
        recipients=[stanza_summary(s) for s in header.stanzas],
        passphrase=any(is_passphrase(s) for s in header.stanzas),
        signer=signer,
        signature_valid=valid,
        complete=size == header.length + b.payload_length,
    )
