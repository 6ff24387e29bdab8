"""Writing containers: encrypt a study folder or in-memory instances, add recipients to an existing container."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from Crypto.Random import get_random_bytes
from tqdm.auto import tqdm

from ..core.atomic import atomic_file
from ..core.errors import MedsecError, NoMatchingRecipientError, OutputError
from ..keys.identity import Identity, Passphrase, Recipient, as_identity, as_recipient, resolve_passphrase
from ..keys.scrypt import is_passphrase
from ..keys.transit import TransitRecipient
from . import signing
from ._reader import Container
from .format import (
    DEFAULT_CHUNK_SIZE,
    FILE_ID_LEN,
    KEY_LEN,
    MAC_LEN,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Body,
    KeySchedule,
    canonical_json,
    ciphertext_length,
    encode_header,
    header_length,
    index_segment,
    meta_segment,
    pixel_segment,
    signed_message,
)
from .segments import encrypt_segment
from .sources import SourceInstance, iter_memory_instances, iter_source_instances, list_source_files
from .stanzas import SCRYPT_DEFAULT_LOG_N, recipient_stanza, scrypt_stanza


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _stanzas(
    study_key: bytes,
    file_id: bytes,
    recipients: list[Recipient],
    passphrase: bytes | None,
    scrypt_log_n: int,
    rand: Callable[[int], bytes],
) -> list[dict[str, Any]]:
    if passphrase is not None and recipients:
        raise MedsecError("give recipients or a passphrase, not both (a passphrase stanza must be the only one)")
    if passphrase is not None:
        return [scrypt_stanza(study_key, passphrase, file_id, log_n=scrypt_log_n, rand=rand)]
    if not recipients:
        raise MedsecError("no recipients and no passphrase: nobody could ever open this study")
    seen: set[str] = set()
    out = []
    for r in recipients:
        if r.key_id not in seen:
            seen.add(r.key_id)
            out.append(recipient_stanza(study_key, r, file_id, rand))
    return out


def encrypt_study(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    recipients: Iterable[Any] = (),
    passphrase: Passphrase = None,
    signer: Identity | str | os.PathLike[str] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    scrypt_log_n: int = SCRYPT_DEFAULT_LOG_N,
    progress: bool = True,
    workers: int = 2,
    _rand: Callable[[int], bytes] = get_random_bytes,
) -> Path:
    """Encrypt the DICOM study in folder ``src`` to the container ``dest``; return ``dest``.

    ``recipients`` are public keys (Recipient, Identity or ``.pub`` paths); alternatively a
    ``passphrase`` (scrypt, N=2^``scrypt_log_n``). ``signer`` (an ed25519 or p256 Identity
    or key path) adds a producer signature. ``src`` is never modified; ``dest`` appears
    only when complete. ``_rand`` exists for deterministic test vectors only.
    """
    files = list_source_files(src)
    return write_container(
        dest,
        iter_source_instances(src, files),
        len(files),
        recipients,
        passphrase,
        signer,
        chunk_size=chunk_size,
        scrypt_log_n=scrypt_log_n,
        progress=progress,
        workers=workers,
        _rand=_rand,
    )


def encrypt_datasets(
    instances: Iterable[pydicom.Dataset | bytes],
    dest: str | os.PathLike[str],
    recipients: Iterable[Any] = (),
    passphrase: Passphrase = None,
    signer: Identity | str | os.PathLike[str] | None = None,
    *,
    total: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    workers: int = 2,
) -> Path:
    """Encrypt in-memory instances (pydicom datasets or DICOM file bytes, one study) to ``dest``.

    Nothing is written to disk but the container, and that only when complete: derived
    results, generated series and instances received from a PACS never exist as plaintext
    files. ``instances`` may be a generator (it is consumed once, a few instances ahead of
    the encryption); ``total`` only sizes the progress bar.
    """
    if total is None and isinstance(instances, Sized):
        total = len(instances)
    return write_container(
        dest,
        iter_memory_instances(instances),
        total,
        recipients,
        passphrase,
        signer,
        chunk_size=chunk_size,
        progress=progress,
        workers=workers,
    )


def write_container(
    dest: str | os.PathLike[str],
    instances: Iterable[SourceInstance],
    total: int | None,
    recipients: Iterable[Any] = (),
    passphrase: Passphrase = None,
    signer: Identity | str | os.PathLike[str] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    scrypt_log_n: int = SCRYPT_DEFAULT_LOG_N,
    progress: bool = True,
    workers: int = 2,
    overwrite: bool = True,
    _rand: Callable[[int], bytes] = get_random_bytes,
) -> Path:
    """Encrypt ``total`` already split ``instances`` (e.g. made in memory) to the container ``dest``.

    With ``overwrite=False`` an existing ``dest``, or one that appears while writing, is never
    replaced: OutputError, and nothing is written."""
    dest = Path(dest)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise MedsecError(f"chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    recips = [as_recipient(r) for r in recipients]
    for r in recips:
        if r.type == "ed25519":
            raise NoMatchingRecipientError(f"{r.key_id}: an ed25519 key signs; it cannot be a recipient")
    sign_id = as_identity(signer) if signer is not None else None
    if sign_id is not None:
        signing.check_signer(sign_id)
    pw = resolve_passphrase(passphrase)

    study_key = _rand(KEY_LEN)
    file_id = _rand(FILE_ID_LEN)
    ks = KeySchedule.derive(study_key, file_id)
    stanzas = _stanzas(study_key, file_id, recips, pw, scrypt_log_n, _rand)
    sig_len = signing.block_length(sign_id) if sign_id else 0
    hlen = header_length(stanzas, sig_len)

    try:
        with atomic_file(dest, mode=0o644, overwrite=overwrite) as fh:
            fd = fh.fileno()
            entries, payload_len = _write_instances(
                fd,
                hlen,
                ks.payload_key,
                file_id,
                chunk_size,
                instances,
                total,
                progress,
                workers,
                hashed=sign_id is not None,
            )
            index_pt = canonical_json({"instances": entries})
            index_ct, index_hash = encrypt_segment(ks.payload_key, file_id, index_segment(), index_pt, chunk_size)
            assert index_hash is not None  # hashed by default
            _pwrite_all(fd, index_ct, hlen + payload_len)
            body = Body(
                chunk_size=chunk_size,
                file_id=file_id,
                commitment=ks.commitment,
                instance_count=len(entries),
                payload_length=payload_len + len(index_ct),
                index_offset=payload_len,
                index_length=len(index_ct),
                index_sha256=index_hash,
            )
            sig_raw = b""
            if sign_id is not None:
                sig_raw = canonical_json(signing.sign(sign_id, signed_message(1, body.encode())))
            raw = encode_header(body, stanzas, sig_raw)
            assert len(raw) + MAC_LEN == hlen, "header length changed while writing"
            _pwrite_all(fd, raw + ks.header_mac(raw), 0)
    except FileExistsError:
        raise OutputError(f"{dest}: already exists (refusing to overwrite); nothing was written") from None
    except OSError as exc:
        raise OutputError(f"{dest}: cannot write container ({exc.strerror or exc}); nothing was written") from None
    return dest


def _write_instances(
    fd: int,
    base: int,
    key: bytes,
    file_id: bytes,
    chunk_size: int,
    instances: Iterable[SourceInstance],
    total: int | None,
    progress: bool,
    workers: int,
    hashed: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Encrypt instances on worker threads (GCM and SHA-256 release the GIL) while the
    main thread reads and parses the next file; each job writes at its precomputed offset.
    Segment hashes are recorded only for signed containers (``hashed``)."""
    entries: list[dict[str, Any]] = []
    pending: deque[Future[None]] = deque()
    offset = 0

    def location(offset: int, ct: bytearray, h: bytes | None) -> dict[str, Any]:
        loc: dict[str, Any] = {"offset": offset, "length": len(ct)}
        if h is not None:
            loc["sha256"] = h.hex()
        return loc

    def job(inst: SourceInstance, i: int, meta_off: int, pix_off: int) -> None:
        ct, h = encrypt_segment(key, file_id, meta_segment(i), inst.meta, chunk_size, hashed)
        _pwrite_all(fd, ct, base + meta_off)
        inst.entry["meta"] = location(meta_off, ct, h)
        if inst.value_length:
            ct, h = encrypt_segment(key, file_id, pixel_segment(i), inst.pixels, chunk_size, hashed)
            _pwrite_all(fd, ct, base + pix_off)
            inst.entry["pixels"] = location(pix_off, ct, h)
        else:
            inst.entry["pixels"] = None
        inst.data, inst.header = b"", None

    bar = tqdm(total=total, unit="file", desc="encrypt", disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, contextlib.closing(bar):
        try:
            for i, inst in enumerate(instances):
                meta_len = len(inst.data) - inst.value_length
                meta_off = offset
                offset += ciphertext_length(meta_len, chunk_size)
                pix_off = offset
                if inst.value_length:
                    offset += ciphertext_length(inst.value_length, chunk_size)
                entries.append(inst.entry)
                pending.append(pool.submit(job, inst, i, meta_off, pix_off))
                while len(pending) > 2 * max(1, workers):
                    pending.popleft().result()
                    bar.update()
            while pending:
                pending.popleft().result()
                bar.update()
        finally:
            for f in pending:
                f.cancel()
    return entries, offset


class Rewrapped(NamedTuple):
    """What :func:`rewrap` changed: key ids added, key ids of the retired stanzas dropped."""

    added: list[str]
    dropped: list[str]


def rewrap(box: Container, recipients: Iterable[Any]) -> Rewrapped:
    """Wrap the study key of an unlocked container (opened keeping its study key) for more
    recipients and rewrite its header; the payload bytes are copied unchanged. A Transit
    recipient also drops the stanzas it retires (its key's versions below
    ``min_decryption_version``, which OpenBao no longer decrypts). Returns the key ids added and
    the key ids dropped. The producer signature stays valid (it covers the body only)."""
    path = box.path
    recips = [as_recipient(r) for r in recipients]
    header = box.header
    if box.study_key is None:
        raise MedsecError(f"{path}: opened without keeping the study key")
    if any(is_passphrase(s) for s in header.stanzas):
        raise MedsecError(
            f"{path}: passphrase-protected; public-key recipients cannot be added "
            "(re-encrypt the study to public keys instead)"
        )
    present = {s.get("kid") for s in header.stanzas}
    new = list({r.key_id: r for r in recips if r.key_id not in present}.values())
    for r in new:
        if r.type == "ed25519":
            raise NoMatchingRecipientError(f"{r.key_id}: an ed25519 key signs; it cannot be a recipient")
    retiring = [r for r in recips if isinstance(r, TransitRecipient)]
    kept = [s for s in header.stanzas if not any(r.retires(s) for r in retiring)]
    dropped = [str(s.get("kid")) for s in header.stanzas if any(r.retires(s) for r in retiring)]
    if not new and not dropped:
        return Rewrapped([], [])
    fid = header.body.file_id
    stanzas = kept + [recipient_stanza(box.study_key, r, fid) for r in new]
    if not stanzas:
        raise MedsecError(f"{path}: every stanza is retired and there is no new recipient; the container is unchanged")
    raw = encode_header(header.body, stanzas, header.signature_raw)
    ks = KeySchedule.derive(box.study_key, fid)
    try:
        with atomic_file(path, mode=os.stat(path).st_mode & 0o777) as fh:
            fh.write(raw + ks.header_mac(raw))
            box.copy_payload_to(fh)
    except OSError as exc:
        raise OutputError(f"{path}: cannot rewrite container ({exc.strerror or exc}); it is unchanged") from None
    return Rewrapped([r.key_id for r in new], dropped)
