"""Byte layout of the ``.msec`` header and the key schedule (docs/FORMAT.md, version 1).

Everything here is pure: encoding, decoding and derivations, no file access.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.KDF import HKDF

from ..core.errors import FormatError
from ..keys.stanza import KEY_LEN as KEY_LEN
from ..keys.stanza import TAG_LEN as TAG_LEN

MAGIC = b"\x89MSEC\r\n\x1a"
VERSION = 1
SUITE_AES256GCM_HKDF_SHA256 = 1

FILE_ID_LEN = 16
MAC_LEN = 32
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 26
MAX_STANZAS_LEN = 1 << 20
MAX_SIGNATURE_LEN = 1 << 16
MAX_JSON_DEPTH = 16  # arrays and objects in the header blocks and the index (they use 4 at most)

# body: suite u16, chunk_size u32, file_id 16, commitment 32, instance_count u32,
#       payload_length u64, index_offset u64, index_length u64, index_sha256 32
_BODY = struct.Struct(">HI16s32sIQQQ32s")
BODY_LEN = _BODY.size
_PREFIX = struct.Struct(">8sH")
PREFIX_LEN = _PREFIX.size
_U32 = struct.Struct(">I")

SIGNATURE_CONTEXT = b"medsec-nb/v1 signature\x00"
_INFO_MAC = b"medsec-nb/v1 header mac"
_INFO_COMMIT = b"medsec-nb/v1 key commitment"
_INFO_PAYLOAD = b"medsec-nb/v1 payload"


@dataclass(frozen=True)
class Body:
    """The fixed, signed part of the header."""

    chunk_size: int
    file_id: bytes
    commitment: bytes
    instance_count: int
    payload_length: int
    index_offset: int
    index_length: int
    index_sha256: bytes
    suite: int = SUITE_AES256GCM_HKDF_SHA256

    def encode(self) -> bytes:
        return _BODY.pack(
            self.suite,
            self.chunk_size,
            self.file_id,
            self.commitment,
            self.instance_count,
            self.payload_length,
            self.index_offset,
            self.index_length,
            self.index_sha256,
        )

    @classmethod
    def decode(cls, raw: bytes, where: str) -> Body:
        suite, cs, fid, com, n, plen, ioff, ilen, ihash = _BODY.unpack(raw)
        if suite != SUITE_AES256GCM_HKDF_SHA256:
            raise FormatError(f"{where}: unknown cipher suite {suite}")
        if not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE:
            raise FormatError(f"{where}: chunk size {cs} out of range")
        if ioff + ilen > plen:
            raise FormatError(f"{where}: index lies outside the payload")
        return cls(cs, fid, com, n, plen, ioff, ilen, ihash, suite)


@dataclass(frozen=True)
class Header:
    """A parsed header: the raw bytes (for MAC and signature) and its fields."""

    version: int
    body: Body
    stanzas: list[dict[str, Any]]
    signature: dict[str, Any] | None
    raw: bytes  # every header byte before the MAC
    mac: bytes
    signature_raw: bytes

    @property
    def length(self) -> int:
        """Header size in bytes, MAC included: the payload starts here."""
        return len(self.raw) + MAC_LEN

    def signed_message(self) -> bytes:
        return signed_message(self.version, self.raw[PREFIX_LEN : PREFIX_LEN + BODY_LEN])


def signed_message(version: int, body: bytes) -> bytes:
    """What a producer signature covers: context, magic, version, body."""
    return SIGNATURE_CONTEXT + _PREFIX.pack(MAGIC, version) + body


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def encode_header(body: Body, stanzas: list[dict[str, Any]], signature_raw: bytes = b"") -> bytes:
    """Header bytes before the MAC; ``signature_raw`` is the encoded signature block (or empty)."""
    st = canonical_json(stanzas)
    sig = signature_raw
    return b"".join([_PREFIX.pack(MAGIC, VERSION), body.encode(), _U32.pack(len(st)), st, _U32.pack(len(sig)), sig])


def header_length(stanzas: list[dict[str, Any]], signature_len: int) -> int:
    """Header size, MAC included, for these stanzas and a signature block of ``signature_len`` bytes."""
    return PREFIX_LEN + BODY_LEN + 4 + len(canonical_json(stanzas)) + 4 + signature_len + MAC_LEN


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')  # UTF-8 continuation bytes are >= 0x80
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_INNERMOST = re.compile(rb"\[\]|\{\}")


def _too_deep(raw: bytes) -> bool:
    """Whether arrays and objects nest deeper than :data:`MAX_JSON_DEPTH` in the JSON ``raw``
    (brackets in strings ignored), found without a recursive parser and at C speed: escapes
    and strings are dropped, the rest reduced to brackets, and one level of innermost pairs is
    removed per pass; opens left unclosed are counted too."""
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    brackets = b"".join(raw.translate(None, _NOT_STRUCTURE).split(b'"')[::2])  # outside strings
    for _ in range(MAX_JSON_DEPTH):
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not removed:
            break
    else:
        if _INNERMOST.search(brackets):
            return True
    depth = 0  # what is left does not pair up (only hostile or broken input): how deep its opens go
    for c in brackets:
        depth = depth + 1 if c in b"[{" else max(depth - 1, 0)
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def parse_json(raw: bytes, where: str, what: str) -> Any:
    """``raw`` parsed as UTF-8 JSON; FormatError (naming ``where`` and ``what``) when it is not,
    or when it nests deeper than :data:`MAX_JSON_DEPTH` (checked before parsing)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: {what} is not UTF-8 JSON") from None
    if _too_deep(raw):
        raise FormatError(f"{where}: {what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError:
        raise FormatError(f"{where}: {what} is not valid JSON") from None


def check_magic(prefix: bytes, where: str) -> int:
    """Return the format version, or raise FormatError for a non-container."""
    if len(prefix) < PREFIX_LEN or prefix[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{where}: not a medsec container (bad magic bytes)")
    version: int = _PREFIX.unpack(prefix[:PREFIX_LEN])[1]
    if version != VERSION:
        raise FormatError(
            f"{where}: unsupported container format version {version} (this medsec-nb reads version {VERSION})"
        )
    return version


def decode_header(read: Callable[[int, int], bytes], where: str) -> Header:
    """Parse a header with ``read(offset, length) -> bytes``; structural checks only."""

    def need(off: int, n: int) -> bytes:
        data = read(off, n)
        if len(data) != n:
            raise FormatError(f"{where}: truncated header")
        return data

    version = check_magic(need(0, PREFIX_LEN), where)
    body = Body.decode(need(PREFIX_LEN, BODY_LEN), where)
    off = PREFIX_LEN + BODY_LEN
    (slen,) = _U32.unpack(need(off, 4))
    if slen > MAX_STANZAS_LEN:
        raise FormatError(f"{where}: recipient block of {slen} bytes is implausibly large")
    st_raw = need(off + 4, slen)
    off += 4 + slen
    (siglen,) = _U32.unpack(need(off, 4))
    if siglen > MAX_SIGNATURE_LEN:
        raise FormatError(f"{where}: signature block of {siglen} bytes is implausibly large")
    sig_raw = need(off + 4, siglen)
    off += 4 + siglen
    mac = need(off, MAC_LEN)
    raw = need(0, off)
    stanzas = parse_json(st_raw, where, "header recipient block")
    signature = parse_json(sig_raw, where, "header signature block") if siglen else None
    if not isinstance(stanzas, list) or not all(isinstance(s, dict) for s in stanzas) or not stanzas:
        raise FormatError(f"{where}: header has no valid recipient stanzas")
    if signature is not None and not isinstance(signature, dict):
        raise FormatError(f"{where}: malformed signature block")
    return Header(version, body, stanzas, signature, raw, mac, sig_raw)


@dataclass(frozen=True)
class KeySchedule:
    """Keys derived from the study key with HKDF-SHA256 (salt = file id)."""

    mac_key: bytes
    commitment: bytes
    payload_key: bytes

    @classmethod
    def derive(cls, study_key: bytes, file_id: bytes) -> KeySchedule:
        def hk(info: bytes) -> bytes:
            return HKDF(study_key, KEY_LEN, file_id, SHA256, context=info)

        return cls(hk(_INFO_MAC), hk(_INFO_COMMIT), hk(_INFO_PAYLOAD))

    def header_mac(self, raw: bytes) -> bytes:
        return HMAC.new(self.mac_key, raw, SHA256).digest()

    def check_header_mac(self, raw: bytes, mac: bytes) -> bool:
        try:
            HMAC.new(self.mac_key, raw, SHA256).verify(mac)
            return True
        except ValueError:
            return False


def chunk_nonce(segment: int, chunk: int, last: bool) -> bytes:
    """96-bit GCM nonce: segment u32 | chunk u32 | last flag u8 | 3 zero bytes."""
    return struct.pack(">IIB3x", segment, chunk, 1 if last else 0)


def chunk_count(plaintext_len: int, chunk_size: int) -> int:
    return max(1, -(-plaintext_len // chunk_size))


def ciphertext_length(plaintext_len: int, chunk_size: int) -> int:
    return plaintext_len + TAG_LEN * chunk_count(plaintext_len, chunk_size)


def plaintext_length(ciphertext_len: int, chunk_size: int, where: str = "container") -> int:
    """Inverse of :func:`ciphertext_length`; raises FormatError when impossible."""
    n = -(-ciphertext_len // (chunk_size + TAG_LEN))
    pt = ciphertext_len - TAG_LEN * max(1, n)
    if pt < 0 or ciphertext_length(pt, chunk_size) != ciphertext_len:
        raise FormatError(f"{where}: impossible segment length {ciphertext_len}")
    return pt


def index_segment() -> int:
    return 0


def meta_segment(i: int) -> int:
    return 2 * i + 1


def pixel_segment(i: int) -> int:
    return 2 * i + 2
