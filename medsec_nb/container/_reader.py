"""The raw reader: key unwrapping and authenticated random access to segments.

Private: it decrypts with no policy decision and no record. Every public way to decrypt goes
through the audited gate (``medsec_nb.access``), which is the only caller outside tests.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, count
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from Crypto.Hash import SHA256

from ..core.errors import (
    AuthenticationError,
    FormatError,
    MedsecError,
    NoMatchingRecipientError,
    SignatureError,
    StudyClosedError,
    WrongPassphraseError,
)
from ..keys.identity import Identity, Passphrase, Recipient, as_identity, as_recipient, resolve_passphrase
from ..keys.transit import SiteKey, TransitKey
from . import signing
from .files import ByteSource, LocalFile
from .format import (
    Header,
    KeySchedule,
    decode_header,
    index_segment,
    meta_segment,
    parse_json,
    pixel_segment,
    plaintext_length,
)
from .segments import decrypt_segment
from .sources import SourceInstance
from .stanzas import passphrase_stanza, unwrap_with_identity, unwrap_with_passphrase


def _entry_ok(e: Any, n_payload: int) -> bool:
    if not isinstance(e, dict) or not isinstance(e.get("meta"), dict):
        return False
    for loc in (e["meta"], e.get("pixels")):
        if loc is None:
            continue
        if not isinstance(loc, dict) or not all(isinstance(loc.get(k), int) for k in ("offset", "length")):
            return False
        if loc["offset"] < 0 or loc["length"] < 0 or loc["offset"] + loc["length"] > n_payload:
            return False
    return all(isinstance(e.get(k), str) for k in ("sop", "series", "study", "path"))


class Container:
    """An unlocked container: authenticated header and index, segments decrypted on demand."""

    def __init__(
        self,
        path: Path | str,
        file: ByteSource,
        header: Header,
        ks: KeySchedule,
        entries: list[dict[str, Any]],
        signer: str | None,
        key_id: str,
        study_key: bytes | None,
    ):
        self.path = path
        self.header = header
        self.signer = signer
        self.key_id = key_id
        self.entries = entries
        self.study_key = study_key
        self._file = file
        self._ks: KeySchedule | None = ks
        self._lock = threading.Lock()
        self._tls = threading.local()
        #: segment hashes exist (and are checked) in signed containers only: see docs/FORMAT.md
        self.hashed = header.signature is not None

    # -- lifecycle
    def close(self) -> None:
        """Forget the keys and the index and close the file."""
        with self._lock:
            self._ks = None
            self.study_key = None
            self.entries = []
            self._file.close()

    @property
    def closed(self) -> bool:
        return self._ks is None

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _entry(self, i: int) -> dict[str, Any]:
        entries = self.entries  # emptied by close(), possibly on another thread
        if self._ks is None or not entries:
            raise StudyClosedError(f"{self.path}: study is closed")
        return entries[i]

    def _keys(self) -> KeySchedule:
        ks = self._ks
        if ks is None:
            raise StudyClosedError(f"{self.path}: study is closed")
        return ks

    # -- segments
    def _scratch(self, name: str, n: int) -> memoryview:
        """A per-thread reusable buffer of at least ``n`` bytes (no page faults per slice)."""
        buf = getattr(self._tls, name, None)
        if buf is None or len(buf) < n:
            buf = bytearray(max(n, 1 << 16))
            setattr(self._tls, name, buf)
        return memoryview(buf)[:n]

    def _read_ct(self, loc: dict[str, Any], what: str) -> memoryview:
        """The stored segment, in this thread's read buffer (valid until its next read)."""
        view = self._scratch("ct", loc["length"])
        if self._file.readinto(self.header.length + loc["offset"], view) != loc["length"]:
            raise FormatError(f"{self.path}: {what} is truncated")
        return view

    def _expected_hash(self, loc: dict[str, Any], what: str) -> bytes | None:
        if not self.hashed:
            return None
        try:
            return bytes.fromhex(loc["sha256"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{self.path}: signed container lacks the hash of {what}") from None

    def _decrypt(self, segment: int, loc: dict[str, Any], what: str, out: memoryview, check_hash: bool = True) -> None:
        ks = self._keys()
        cs = self.header.body.chunk_size
        where = f"{self.path}: {what}"
        n = plaintext_length(loc["length"], cs, where)
        if len(out) != n:
            raise FormatError(f"{where} holds {n} bytes, expected {len(out)}")
        ct = self._read_ct(loc, what)
        decrypt_segment(
            ks.payload_key,
            self.header.body.file_id,
            segment,
            ct,
            cs,
            self._expected_hash(loc, what) if check_hash else None,
            out,
            where,
        )

    def _plain_len(self, loc: dict[str, Any]) -> int:
        return plaintext_length(loc["length"], self.header.body.chunk_size, str(self.path))

    def meta_bytes(self, i: int) -> bytearray:
        """Decrypted file bytes of instance ``i`` minus its Pixel Data value."""
        loc = self._entry(i)["meta"]
        buf = bytearray(self._plain_len(loc))
        self._decrypt(meta_segment(i), loc, f"instance {i} metadata", memoryview(buf))
        # a fresh buffer callers may resize: views of ``buf`` can outlive the call when a frame is
        # held elsewhere (Dask's sampling profiler), and a resize would then raise BufferError
        return bytearray(buf)

    def pixel_view(self, i: int, out: memoryview | None = None) -> memoryview:
        """Decrypted Pixel Data value of instance ``i``: into ``out`` when given, else into
        this thread's scratch buffer (valid until this thread's next ``pixel_view``)."""
        loc = self._entry(i).get("pixels")
        if loc is None:
            return memoryview(b"")
        if out is None:
            out = self._scratch("pt", self._plain_len(loc))
        self._decrypt(pixel_segment(i), loc, f"instance {i} pixel data", out)
        return out

    def instance_parts(self, i: int) -> tuple[bytearray, bytes | None]:
        """Decrypted (metadata, Pixel Data value or None) of instance ``i``."""
        meta = self.meta_bytes(i)
        if self._entry(i).get("pixels") is None:
            return meta, None
        return meta, bytes(self.pixel_view(i))

    def file_bytes(self, i: int) -> bytes:
        """The original file of instance ``i``, byte for byte."""
        meta = self.meta_bytes(i)
        v = self._entry(i).get("pixel_value_offset")
        if v is None:
            return bytes(meta)
        return b"".join((meta[:v], self.pixel_view(i), meta[v:]))

    def source_instance(self, i: int) -> SourceInstance:
        """Instance ``i`` as the writer takes it (re-encryption): its original bytes split where
        the index says (docs/FORMAT.md, "Index"), with no DICOM parsing."""
        data = self.file_bytes(i)
        e = self._entry(i)
        entry = {k: v for k, v in e.items() if k not in ("meta", "pixels")}
        v = e.get("pixel_value_offset")
        if v is None or e.get("pixels") is None:
            return SourceInstance(data, entry, len(data), 0)
        return SourceInstance(data, entry, v, self._plain_len(e["pixels"]))

    def verify(self, progress: bool = False) -> int:
        """Authenticate every byte of the payload (hashes when signed, every GCM tag);
        nothing is kept. Returns the container size checked."""
        from tqdm.auto import tqdm

        for i in tqdm(range(len(self.entries)), unit="inst", desc="verify", disable=None if progress else True):
            self.meta_bytes(i)
            self.pixel_view(i)
        return self.header.length + self.header.body.payload_length

    def copy_payload_to(self, fh: BinaryIO, block: int = 1 << 22) -> None:
        start, n = self.header.length, self.header.body.payload_length
        done = 0
        while done < n:
            data = self._file.read(start + done, min(block, n - done))
            if not data:
                raise FormatError(f"{self.path}: truncated payload")
            fh.write(data)
            done += len(data)


MAX_NAME_BYTES = 255  # one path component, as most file systems allow
MAX_PATH_BYTES = 1024  # a whole stored relative path


def _safe_part(part: str) -> bool:
    if part in ("", ".", "..") or not part.isprintable():  # control characters, NUL, lone surrogates
        return False
    return len(part.encode("utf-8")) <= MAX_NAME_BYTES


def safe_relpath(rel: Any, i: int) -> PurePosixPath:
    """The stored relative path of an instance, or a neutral name if it is unsafe (absolute,
    ``..`` or ``.``, a control character, too long for a file system)."""
    p = PurePosixPath(rel) if isinstance(rel, str) else PurePosixPath("")
    if (
        not p.parts
        or p.is_absolute()
        or not all(_safe_part(part) for part in p.parts)
        or len(str(p).encode("utf-8")) > MAX_PATH_BYTES
    ):
        return PurePosixPath(f"instance_{i:05d}.dcm")
    return p


def open_container(
    path: str | os.PathLike[str],
    identity: Identity | str | os.PathLike[str] | None = None,
    passphrase: Passphrase = None,
    require_signer: Recipient | str | os.PathLike[str] | None = None,
    *,
    identity_passphrase: Passphrase = None,
    _keep_study_key: bool = False,
    before_unlock: Callable[[Header], None] | None = None,
    source: ByteSource | None = None,
    study_key: bytes | None = None,
    study_key_id: str | None = None,
) -> Container:
    """Unlock ``path`` with an identity or passphrase: authenticate the header, check the key
    commitment and signature, decrypt the index. Instances stay encrypted until asked for.

    ``before_unlock(header)`` runs on the parsed public header before any key is unwrapped
    (the access layer's policy check); raising there stops the opening.
    ``source``: a byte-range reader to use instead of the local file (``container.remote``;
    ``path`` is then only its name). ``study_key``: the study key, already obtained by
    ``identity`` another way (a cohort worker's transport); the header's stanzas are not used,
    and the header MAC and key commitment still authenticate the key for this container.
    ``study_key_id``: with ``study_key`` and no identity, the key id of the site key that
    unwrapped it elsewhere (the key service), for the record."""
    path = Path(path) if source is None else str(path)
    where = str(path)
    if identity is None and passphrase is None and study_key is None:
        raise MedsecError(f"{where}: give an identity (private key) or the study passphrase")
    if study_key is not None and identity is None and study_key_id is None:
        raise MedsecError(f"{where}: a study key obtained elsewhere needs the identity that obtained it")
    file: ByteSource = LocalFile(path) if source is None else source
    try:
        header = decode_header(file.read, where)
        if before_unlock is not None:
            before_unlock(header)
        fid = header.body.file_id
        if study_key is not None and identity is None:
            key_id = str(study_key_id)
        elif identity is not None:
            ident = as_identity(identity, identity_passphrase)
            if study_key is None:
                study_key = unwrap_with_identity(header.stanzas, ident, fid, where)
            key_id = ident.key_id
        else:
            passphrase_stanza(header.stanzas, where)
            pw = resolve_passphrase(passphrase)
            if pw is None:
                raise WrongPassphraseError(f"{where}: no passphrase given")
            study_key = unwrap_with_passphrase(header.stanzas, pw, fid, where)
            key_id = "passphrase"
        ks = KeySchedule.derive(study_key, fid)
        if not ks.check_header_mac(header.raw, header.mac):
            raise AuthenticationError(f"{where}: header failed authentication (altered)")
        if ks.commitment != header.body.commitment:
            raise AuthenticationError(f"{where}: key commitment mismatch (header body altered)")
        expected = header.length + header.body.payload_length
        if file.size != expected:
            kind = "truncated" if file.size < expected else "extended"
            raise FormatError(f"{where}: file is {kind} ({file.size} bytes, header says {expected})")
        signer = None
        if header.signature is not None:
            signer = signing.verify(header.signature, header.signed_message(), where)
        if require_signer is not None:
            want = as_recipient(require_signer).key_id
            if signer != want:
                raise SignatureError(f"{where}: not signed by {want} (signer: {signer or 'none'})")
        box = Container(path, file, header, ks, [], signer, key_id, study_key if _keep_study_key else None)
        b = header.body
        loc = {"offset": b.index_offset, "length": b.index_length}
        idx = bytearray(plaintext_length(b.index_length, b.chunk_size, where))
        if SHA256.new(box._read_ct(loc, "index")).digest() != b.index_sha256:
            raise AuthenticationError(f"{where}: index failed authentication (altered)")
        box._decrypt(index_segment(), loc, "index", memoryview(idx), check_hash=False)  # checked just above
        entries = _parse_index(bytes(idx), b.instance_count, b.index_offset, where)
        box.entries = entries
        return box
    except BaseException:
        file.close()
        raise


def _parse_index(raw: bytes, count: int, n_payload: int, where: str) -> list[dict[str, Any]]:
    index = parse_json(raw, where, "index")
    entries = index.get("instances") if isinstance(index, dict) else None
    if not isinstance(entries, list) or len(entries) != count or not all(_entry_ok(e, n_payload) for e in entries):
        raise FormatError(f"{where}: index is malformed")
    return entries


def export_relpaths(entries: Iterable[dict[str, Any]]) -> list[PurePosixPath]:
    """A safe relative output path per instance, distinct from every other one even on a
    case-insensitive file system, and never a file where another needs a folder: a stored name
    already taken becomes ``instance_<i>.dcm``, then ``instance_<i>_<k>.dcm`` for the first
    free ``k``."""
    files: set[str] = set()
    folders: set[str] = set()

    def free(p: PurePosixPath) -> bool:
        key = str(p).casefold()
        return key not in files and key not in folders and not any(str(a).casefold() in files for a in p.parents[:-1])

    out = []
    for i, e in enumerate(entries):
        names = chain(
            [safe_relpath(e.get("path"), i), PurePosixPath(f"instance_{i:05d}.dcm")],
            (PurePosixPath(f"instance_{i:05d}_{k}.dcm") for k in count(1)),
        )
        p = next(c for c in names if free(c))
        files.add(str(p).casefold())
        folders.update(str(a).casefold() for a in p.parents[:-1])
        out.append(p)
    return out


def read_unlock_parts(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """What a key holder elsewhere needs to unlock ``path`` (docs/KEYSERVICE.md, ``unlock``):
    the header bytes (through its MAC) and the encrypted index; nothing else is read."""
    file = LocalFile(Path(path))
    try:
        header = decode_header(file.read, str(path))
        b = header.body
        index = file.read(header.length + b.index_offset, b.index_length)
        if len(index) != b.index_length:
            raise FormatError(f"{path}: index is truncated")
        return file.read(0, header.length), index
    finally:
        file.close()


def header_from_bytes(raw_header: bytes, where: str) -> Header:
    """The header parsed from exactly its bytes (what :func:`read_unlock_parts` read)."""
    header = decode_header(lambda off, n: raw_header[off : off + n], where)
    if len(raw_header) != header.length:
        raise FormatError(f"{where}: header is {len(raw_header)} bytes, its fields say {header.length}")
    return header


def unlock_parts(
    header: Header, index_ct: bytes, identities: Sequence[SiteKey], where: str
) -> tuple[bytes, str, str | None, int]:
    """For the holder of site keys (the key service): from a container's header and encrypted
    index alone, the study key, the key id that unwrapped it, the Study Instance UID the
    authenticated index names (None if it names none as text) and its instance count. The
    header MAC, the key commitment and the index hash are checked as :func:`open_container`
    checks them; the entries themselves are the opener's to check. Deciding whether to unwrap
    is the caller's job."""
    fid, b = header.body.file_id, header.body
    for ident in identities:
        try:
            if isinstance(ident, TransitKey):  # OpenBao decrypts; the private key stays there
                study_key, key_id = ident.unwrap(header.stanzas, fid, where)
            else:
                study_key, key_id = unwrap_with_identity(header.stanzas, ident, fid, where), ident.key_id
        except NoMatchingRecipientError:
            continue
        break
    else:
        raise NoMatchingRecipientError(f"{where}: not encrypted to any key this service holds")
    ks = KeySchedule.derive(study_key, fid)
    if not ks.check_header_mac(header.raw, header.mac):
        raise AuthenticationError(f"{where}: header failed authentication (altered)")
    if ks.commitment != b.commitment:
        raise AuthenticationError(f"{where}: key commitment mismatch (header body altered)")
    if len(index_ct) != b.index_length or SHA256.new(index_ct).digest() != b.index_sha256:
        raise AuthenticationError(f"{where}: index failed authentication (altered)")
    idx = bytearray(plaintext_length(b.index_length, b.chunk_size, where))
    decrypt_segment(
        ks.payload_key, fid, index_segment(), index_ct, b.chunk_size, None, memoryview(idx), f"{where}: index"
    )
    return study_key, key_id, _first_study_uid(bytes(idx), where), b.instance_count


def _first_study_uid(index: bytes, where: str) -> str | None:
    """The first entry's ``study`` of an authenticated index. A writer's index is canonical JSON
    (``{"instances":[{...},...]}``), so only its first entry is parsed; any other shape is parsed
    whole. None if there is no entry or no text UID."""
    head = b'{"instances":[{'
    first: Any = None
    if index.startswith(head):
        try:
            first, _ = json.JSONDecoder().raw_decode(index.decode("utf-8"), len(head) - 1)
        except (ValueError, RecursionError, UnicodeDecodeError):
            first = None
    if not isinstance(first, dict):
        parsed = parse_json(index, where, "index")
        entries = parsed.get("instances") if isinstance(parsed, dict) else None
        if not isinstance(entries, list):
            raise FormatError(f"{where}: index is malformed")
        first = entries[0] if entries and isinstance(entries[0], dict) else {}
    uid = first.get("study")
    return uid if isinstance(uid, str) else None
