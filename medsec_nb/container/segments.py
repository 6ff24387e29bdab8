"""Chunked AES-256-GCM of one segment (docs/FORMAT.md, "Segments").

A segment's plaintext is cut into ``chunk_size`` pieces; piece ``j`` of segment ``s``
is sealed with nonce ``s | j | last`` and AAD ``file_id | nonce``, and stored as
ciphertext followed by its 16-byte tag. Any truncation, extension, reordering,
duplication or transplanting of chunks or segments fails authentication.
"""

from __future__ import annotations

from Crypto.Cipher import AES
from Crypto.Hash import SHA256

from ..core.errors import AuthenticationError, MedsecError
from .format import TAG_LEN, chunk_count, chunk_nonce, ciphertext_length

MAX_CHUNKS = (1 << 32) - 1  # chunk numbers are u32 in the nonce


def encrypt_segment(
    key: bytes, file_id: bytes, segment: int, plaintext: bytes | memoryview, chunk_size: int, hashed: bool = True
) -> tuple[bytearray, bytes | None]:
    """Return (ciphertext, SHA-256 of the ciphertext, or None unless ``hashed``)."""
    n = len(plaintext)
    if chunk_count(n, chunk_size) > MAX_CHUNKS or not 0 <= segment < 1 << 32:
        raise MedsecError(f"segment {segment} of {n} bytes exceeds the format's nonce space")
    out = bytearray(ciphertext_length(n, chunk_size))
    view = memoryview(out)
    src = memoryview(plaintext)
    count = chunk_count(n, chunk_size)
    pos = 0
    for j in range(count):
        piece = src[j * chunk_size : (j + 1) * chunk_size]
        nonce = chunk_nonce(segment, j, j == count - 1)
        c = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_LEN)
        c.update(file_id + nonce)
        if len(piece):
            c.encrypt(piece, output=view[pos : pos + len(piece)])
        pos += len(piece)
        view[pos : pos + TAG_LEN] = c.digest()
        pos += TAG_LEN
    return out, SHA256.new(out).digest() if hashed else None


def decrypt_segment(
    key: bytes,
    file_id: bytes,
    segment: int,
    ciphertext: bytes | bytearray | memoryview,
    chunk_size: int,
    expected_sha256: bytes | None,
    out: memoryview,
    what: str,
) -> None:
    """Authenticate ``ciphertext`` and decrypt it into ``out`` (exactly the plaintext length).

    A SHA-256 from the authenticated index (signed containers) is checked before any
    decryption; a chunk that fails its GCM tag wipes ``out`` before raising.
    """
    if expected_sha256 is not None and SHA256.new(ciphertext).digest() != expected_sha256:
        raise AuthenticationError(f"{what} failed authentication (ciphertext altered)")
    ct = memoryview(ciphertext)
    n = len(out)
    count = chunk_count(n, chunk_size)
    if ciphertext_length(n, chunk_size) != len(ct):
        raise AuthenticationError(f"{what} has the wrong length (truncated or extended)")
    pos = 0
    for j in range(count):
        start = j * chunk_size
        m = min(chunk_size, n - start)
        nonce = chunk_nonce(segment, j, j == count - 1)
        c = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_LEN)
        c.update(file_id + nonce)
        try:
            if m:
                c.decrypt(ct[pos : pos + m], output=out[start : start + m])
            c.verify(ct[pos + m : pos + m + TAG_LEN])
        except ValueError:
            out[:] = bytes(len(out))
            raise AuthenticationError(f"{what} failed authentication (tampered, reordered or wrong key)") from None
        pos += m + TAG_LEN
