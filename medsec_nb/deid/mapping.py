"""The re-identification mapping of an export (pseudonyms, UIDs, date shifts), recorded and sealed.

A mapping file is JSON (docs/DEID.md, "Mapping file"): a public header (format, file id, key
commitment, the container's recipient stanzas, a header MAC) and the mapping itself as one
AES-256-GCM segment, all with the ``.msec`` container's key machinery: a random 256-bit key
wrapped for each recipient (or a passphrase), HKDF-SHA256 key schedule, chunked GCM.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Crypto.Random import get_random_bytes

from ..container.format import FILE_ID_LEN, KEY_LEN, KeySchedule, canonical_json, parse_json, plaintext_length
from ..container.segments import decrypt_segment, encrypt_segment
from ..container.stanzas import recipient_stanza, scrypt_stanza, unwrap_with_identity, unwrap_with_passphrase
from ..core.atomic import atomic_file
from ..core.errors import AuthenticationError, FormatError, MedsecError
from ..keys.identity import Identity, Passphrase, Recipient, as_identity, as_recipient, resolve_passphrase
from .keyed import DeidKeys

FORMAT = "medsec-nb deid-mapping"
VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RecordingKeys(DeidKeys):
    """:class:`DeidKeys` that also note every derivation: the mapping for re-identification."""

    uids: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    patients: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def uid(self, original: str) -> str:
        new = super().uid(original)
        self.uids[original.strip().rstrip("\x00")] = new
        return new

    def patient_pseudonym(self, patient_key: str) -> str:
        new = super().patient_pseudonym(patient_key)
        self.patients.setdefault(patient_key.strip(), {})["pseudonym"] = new
        return new

    def date_shift_days(self, patient_key: str) -> int:
        days = super().date_shift_days(patient_key)
        self.patients.setdefault(patient_key.strip(), {})["date_shift_days"] = days
        return days

    def mapping(self) -> dict[str, Any]:
        """Original Patient ID (or name) -> pseudonym and date shift (days back); original UID -> new UID."""
        return {
            "patients": {k: dict(v) for k, v in sorted(self.patients.items())},
            "uids": dict(sorted(self.uids.items())),
        }


def seal_mapping(
    mapping: dict[str, Any],
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]] = (),
    passphrase: Passphrase = None,
    *,
    note: dict[str, Any] | None = None,
) -> bytes:
    """The mapping encrypted to ``recipients`` (public keys) or a ``passphrase``; ``note`` is a public,
    non-identifying header field (e.g. the export's de-identified Study Instance UIDs)."""
    recips = [as_recipient(r) for r in recipients]
    pw = resolve_passphrase(passphrase)
    if bool(recips) == (pw is not None):
        raise MedsecError("seal the mapping to recipients (public keys) or to a passphrase (exactly one)")
    key, file_id = get_random_bytes(KEY_LEN), get_random_bytes(FILE_ID_LEN)
    ks = KeySchedule.derive(key, file_id)
    stanzas = (
        [scrypt_stanza(key, pw, file_id)]
        if pw is not None
        else [recipient_stanza(key, r, file_id) for r in dict.fromkeys(recips)]
    )
    header = {
        "format": FORMAT,
        "version": VERSION,
        "file_id": file_id.hex(),
        "commitment": ks.commitment.hex(),
        "stanzas": stanzas,
        "note": note or {},
    }
    ct, _ = encrypt_segment(ks.payload_key, file_id, 0, canonical_json(mapping), _CHUNK, hashed=False)
    sealed = {
        **header,
        "header_mac": ks.header_mac(canonical_json(header)).hex(),
        "ciphertext": base64.b64encode(bytes(ct)).decode("ascii"),
    }
    return (json.dumps(sealed, indent=1) + "\n").encode("utf-8")


def write_mapping(
    path: str | os.PathLike[str],
    mapping: dict[str, Any],
    recipients: Iterable[Recipient | Identity | str | os.PathLike[str]] = (),
    passphrase: Passphrase = None,
    *,
    note: dict[str, Any] | None = None,
) -> Path:
    """Seal the mapping and write it atomically (mode 0600) to ``path`` (not overwritten if present)."""
    data = seal_mapping(mapping, recipients, passphrase, note=note)
    with atomic_file(path, mode=0o600, overwrite=False) as fh:
        fh.write(data)
    return Path(path)


@dataclass(frozen=True)
class SealedMapping:
    """A mapping file's public header: enough to name it and ask the policy, no secret."""

    path: Path
    file_id: str
    note: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)


def read_sealed(path: str | os.PathLike[str]) -> SealedMapping:
    """Read a mapping file's public header (nothing is decrypted)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MedsecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    raw = parse_json(data, str(path), "mapping file")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise FormatError(f"{path}: not a medsec-nb mapping file")
    if raw.get("version") != VERSION:
        raise FormatError(f"{path}: mapping file version {raw.get('version')!r} is not supported (expected {VERSION})")
    for name, kind in (
        ("file_id", str),
        ("commitment", str),
        ("stanzas", list),
        ("note", dict),
        ("header_mac", str),
        ("ciphertext", str),
    ):
        if not isinstance(raw.get(name), kind):
            raise FormatError(f"{path}: mapping file field {name!r} is missing or malformed")
    return SealedMapping(path, raw["file_id"], raw["note"], raw)


def open_mapping(
    sealed: SealedMapping,
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    identity_passphrase: Passphrase = None,
) -> dict[str, Any]:
    """Decrypt and authenticate a mapping (the audited entry point is ``medsec_nb.study.export``)."""
    raw, where = sealed.raw, str(sealed.path)
    try:
        file_id = bytes.fromhex(raw["file_id"])
        commitment, mac = bytes.fromhex(raw["commitment"]), bytes.fromhex(raw["header_mac"])
        ct = base64.b64decode(raw["ciphertext"], validate=True)
    except ValueError:
        raise FormatError(f"{where}: mapping file has a malformed hex or base64 field") from None
    if identity is not None:
        key = unwrap_with_identity(raw["stanzas"], as_identity(identity, identity_passphrase), file_id, where)
    else:
        pw = resolve_passphrase(passphrase)
        if pw is None:
            raise MedsecError(f"{where}: give the identity (private key) or passphrase the mapping was sealed to")
        key = unwrap_with_passphrase(raw["stanzas"], pw, file_id, where)
    ks = KeySchedule.derive(key, file_id)
    header = {k: raw[k] for k in ("format", "version", "file_id", "commitment", "stanzas", "note")}
    if not hmac.compare_digest(ks.commitment, commitment) or not ks.check_header_mac(canonical_json(header), mac):
        raise AuthenticationError(f"{where}: mapping header failed authentication (altered)")
    out = bytearray(plaintext_length(len(ct), _CHUNK, where))
    decrypt_segment(ks.payload_key, file_id, 0, ct, _CHUNK, None, memoryview(out), f"{where}: mapping")
    mapping: dict[str, Any] = parse_json(bytes(out), where, "decrypted mapping")  # authenticated: ours, a dict
    return mapping
