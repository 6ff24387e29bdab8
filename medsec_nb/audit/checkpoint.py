"""Signed checkpoints of the chain head (C2SP signed-note form) and the checkpoint signing key.

A checkpoint note::

    medsec-nb/audit/v1/<log id>      origin: log id = first 32 hex digits of record 1's hash
    <size>                           records covered; the last one has seq == size
    <base64 of that record's hash>
    time <UTC time of signing>
    bytes <length of the log through that record>
    (empty line)
    — <key name> <base64(4-byte key hash || 64-byte Ed25519 signature over the body)>
    (more signature lines: co-signatures; a verifier needs one valid line of a key it trusts)

The key name is the signer's medsec key id; the key hash is the first 4 bytes of
SHA-256(name || 0x0A || 0x01 || 32-byte public key). See docs/AUDIT.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from Crypto.Hash import SHA256
from Crypto.PublicKey.ECC import EccKey
from Crypto.Signature import eddsa

from ..core.errors import AuditIntegrityError, AuditRecordError
from ..core.runtime import write_once
from ..keys.identity import Identity, Recipient, as_recipient, generate_identity, load_identity, private_pem
from . import record
from .paths import checkpoint_key_path

ORIGIN_PREFIX = "medsec-nb/audit/v1/"
SIG_PREFIX = "\u2014 "
ED25519_ALG = b"\x01"

PublicKeys = (
    Recipient | Identity | str | os.PathLike[str] | Iterable[Recipient | Identity | str | os.PathLike[str]] | None
)

_BODY = re.compile(
    r"(?P<origin>[^\n]+)\n(?P<size>0|[1-9][0-9]*)\n(?P<head>[A-Za-z0-9+/=]{44})\n"
    r"time (?P<time>[0-9T:.\-]+Z)\nbytes (?P<length>0|[1-9][0-9]*)\n"
)


@dataclass(frozen=True)
class ChainHead:
    """What a checkpoint asserts about the log."""

    log_id: str  # 32 hex digits
    size: int  # number of records
    head: str  # hash (hex) of record ``size``
    length: int  # bytes of the log through record ``size``
    time: str

    def body(self) -> bytes:
        head64 = base64.b64encode(bytes.fromhex(self.head)).decode("ascii")
        return f"{ORIGIN_PREFIX}{self.log_id}\n{self.size}\n{head64}\ntime {self.time}\nbytes {self.length}\n".encode()


def _ed25519(key: Recipient | Identity) -> EccKey:
    if key.type != "ed25519" or not isinstance(key.key, EccKey):
        raise AuditRecordError(f"checkpoint keys are ed25519; {key.key_id} is {key.type}")
    return key.key


def _raw_public(key: Recipient | Identity) -> bytes:
    return _ed25519(key).public_key().export_key(format="raw")


def key_hash(name: str, public: bytes) -> bytes:
    return SHA256.new(name.encode("utf-8") + b"\n" + ED25519_ALG + public).digest()[:4]


def sign(head: ChainHead, *identities: Identity) -> str:
    """The signed note for ``head``: one signature line per identity (co-signatures), in order."""
    body, lines = head.body(), []
    for identity in identities:
        name, public = identity.key_id, _raw_public(identity)
        sig = eddsa.new(_ed25519(identity), "rfc8032").sign(body)
        lines.append(f"{SIG_PREFIX}{name} {base64.b64encode(key_hash(name, public) + sig).decode('ascii')}\n")
    if not lines:
        raise AuditRecordError("a checkpoint needs at least one signing key")
    return body.decode("utf-8") + "\n" + "".join(lines)


def parse(note: str) -> tuple[ChainHead, bytes, list[tuple[str, bytes, bytes]]]:
    """(head, signed body, [(key name, key hash, signature)]); AuditIntegrityError if malformed."""
    body, sep, sigs = note.partition("\n\n")
    m = _BODY.fullmatch(body + "\n") if sep else None
    if not m or not m.group("origin").startswith(ORIGIN_PREFIX):
        raise AuditIntegrityError("malformed checkpoint note")
    try:
        head = base64.b64decode(m.group("head"), validate=True).hex()
    except binascii.Error:
        raise AuditIntegrityError("malformed checkpoint note (hash)") from None
    if not sigs.endswith("\n"):
        raise AuditIntegrityError("malformed checkpoint note (no signature)")
    signatures = []
    for line in sigs[:-1].split("\n"):
        parts = line[len(SIG_PREFIX) :].split(" ") if line.startswith(SIG_PREFIX) else []
        try:
            blob = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except binascii.Error:
            blob = b""
        if len(blob) != 68:
            raise AuditIntegrityError("malformed checkpoint signature line")
        signatures.append((parts[0], blob[:4], blob[4:]))
    return (
        ChainHead(
            m.group("origin")[len(ORIGIN_PREFIX) :], int(m.group("size")), head, int(m.group("length")), m.group("time")
        ),
        (body + "\n").encode("utf-8"),
        signatures,
    )


def trusted_signer(note: str, trusted: dict[str, bytes]) -> tuple[ChainHead, str | None, list[str]]:
    """(head, the first trusted key whose signature is valid or None, every signer's name).

    Lines of keys not in ``trusted`` (key name -> raw public key) are ignored; a trusted key's
    line that does not verify means the note was altered: AuditIntegrityError."""
    head, body, signatures = parse(note)
    for name, khash, sig in signatures:
        public = trusted.get(name)
        if public is None or khash != key_hash(name, public):
            continue
        try:
            eddsa.new(eddsa.import_public_key(public), "rfc8032").verify(body, sig)
        except ValueError:
            raise AuditIntegrityError(f"checkpoint signature by {name} is invalid (note altered)") from None
        return head, name, [n for n, _, _ in signatures]
    return head, None, [n for n, _, _ in signatures]


def verify(note: str, trusted: dict[str, bytes]) -> tuple[ChainHead, str]:
    """Check a note's signatures against ``trusted`` (key name -> raw public key): (head, signer).
    One valid trusted signature suffices; co-signatures by other keys are ignored."""
    head, signer, names = trusted_signer(note, trusted)
    if signer is None:
        raise AuditIntegrityError(f"checkpoint is not signed by a trusted key (signed by {', '.join(names)})")
    return head, signer


# ---------------------------------------------------------------- keys


def signing_identity(identity: Identity | str | os.PathLike[str] | None = None) -> Identity:
    """The given ed25519 identity (or key file), else the installation's checkpoint key,
    generated on first use (``<data dir>/audit-checkpoint.key``, mode 0600, ``.pub`` beside it)."""
    if identity is None:
        path, default = checkpoint_key_path()
        if default and not path.exists():
            new = generate_identity("ed25519")
            write_once(path, private_pem(new).encode("ascii"), 0o600)
            write_once(path.with_suffix(".pub"), new.public.pem().encode("ascii") + b"\n", 0o644)
        identity = path
    ident = identity if isinstance(identity, Identity) else load_identity(identity)
    _raw_public(ident)
    return ident


@dataclass(frozen=True)
class TrustedKey:
    """A key checkpoints are verified against, and where it came from."""

    name: str  # medsec key id
    public: bytes  # raw Ed25519 public key
    source: str  # the file it was read from, or "given" for a key object
    installation: bool  # the installation's own key (the default trust anchor)


def trust_anchors(public_key: PublicKeys = None) -> list[TrustedKey]:
    """The keys given, else the installation's checkpoint key (its ``.pub``, or the ``.key``
    itself when unencrypted). Empty when there is none."""
    if public_key is None:
        path, _ = checkpoint_key_path()
        pub = path.with_suffix(".pub")
        if pub.exists():
            rec, source = as_recipient(pub), str(pub)
        elif path.exists():
            rec, source = signing_identity(path).public, str(path)
        else:
            return []
        return [TrustedKey(rec.key_id, _raw_public(rec), source, True)]
    keys = [public_key] if isinstance(public_key, (Recipient, Identity, str, os.PathLike)) else list(public_key)
    out = []
    for k in keys:
        rec = as_recipient(k)
        source = "given" if isinstance(k, (Recipient, Identity)) else str(Path(k).expanduser())
        out.append(TrustedKey(rec.key_id, _raw_public(rec), source, False))
    return out


def trusted_keys(public_key: PublicKeys = None) -> dict[str, bytes]:
    """Key name -> raw public key of :func:`trust_anchors`."""
    return {k.name: k.public for k in trust_anchors(public_key)}


# ---------------------------------------------------------------- the checkpoint file


def store(path: Path, note: str) -> None:
    """Append ``note`` to the checkpoint file (one JSON object per line) and fsync it."""
    line = json.dumps({"note": note}, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.write(fd, line) != len(line):
            raise OSError(f"{path}: short write")
        os.fsync(fd)
    finally:
        os.close(fd)


def stored(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, note) for each checkpoint in the file; none if the file does not exist."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for n, line in enumerate(fh, 1):
            try:
                note = record.loads(line)["note"]
                if not isinstance(note, str) or not line.endswith(b"\n"):
                    raise ValueError
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise AuditIntegrityError(f"{path}: line {n} is not a checkpoint") from None
            yield n, note
