"""Keyed pseudonyms for patient identifiers, so the audit log itself names no patient."""

from __future__ import annotations

from pathlib import Path

from Crypto.Hash import HMAC, SHA256
from Crypto.Random import get_random_bytes

from ..core.errors import AuditUnavailableError
from ..core.runtime import write_once
from .paths import pseudonym_secret_path

SECRET_LEN = 32
_cache: dict[Path, bytes] = {}


def _secret() -> bytes:
    path = pseudonym_secret_path()
    secret = _cache.get(path)
    if secret is None:
        try:
            write_once(path, get_random_bytes(SECRET_LEN), 0o600)
            secret = path.read_bytes()
        except OSError as exc:
            raise AuditUnavailableError(
                f"{path}: cannot create or read the pseudonym secret ({exc.strerror or exc})"
            ) from None
        if len(secret) != SECRET_LEN:
            raise AuditUnavailableError(
                f"{path}: pseudonym secret is damaged ({len(secret)} bytes, expected {SECRET_LEN})"
            )
        _cache[path] = secret
    return secret


def pseudonym(value: str) -> str:
    """First 16 bytes (hex) of HMAC-SHA256 under this installation's secret of ``value``
    (surrounding spaces removed, UTF-8). Stable per installation; unlinkable without the secret."""
    return HMAC.new(_secret(), value.strip().encode("utf-8"), SHA256).hexdigest()[:32]
