"""Byte-range reads of a container through fsspec (object storage, or any fsspec URL).

Only the ranges the reader asks for are fetched, into memory; nothing is cached on disk.
"""

from __future__ import annotations

import os
from typing import Any

from ..core.errors import MedsecError


def is_remote(url: str | os.PathLike[str]) -> bool:
    """True for a URL with a protocol other than ``file`` (``s3://...``, ``gcs://...``, ``memory://...``)."""
    s = str(url)
    return "://" in s and not s.startswith("file://")


class FsspecFile:
    """The reader's file interface (``size``, ``read``, ``readinto``, ``close``) over an fsspec
    file system: each read is one range request (``cat_file``), thread-safe."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.name = url
        try:
            self.fs, self.path = fsspec.core.url_to_fs(url, **(storage_options or {}))
            info = self.fs.info(self.path)
        except FileNotFoundError:
            raise MedsecError(f"{url}: no such object") from None
        except (OSError, ValueError, ImportError) as exc:
            raise MedsecError(f"{url}: cannot open ({type(exc).__name__}: {exc})") from None
        if info.get("type") != "file":
            raise MedsecError(f"{url}: is a folder, not a container")
        self.size = int(info["size"])

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        try:
            data: bytes = self.fs.cat_file(self.path, start=offset, end=end)
        except (OSError, ValueError) as exc:
            raise MedsecError(f"{self.name}: read of bytes {offset}-{end} failed ({type(exc).__name__})") from None
        return data

    def readinto(self, offset: int, view: memoryview) -> int:
        data = self.read(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Nothing to release (each read is a request)."""


def glob(pattern: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sorted URLs (remote) or paths (local) matching ``pattern``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(pattern, **(storage_options or {}))
    found = sorted(fs.glob(path))
    return [fs.unstrip_protocol(p) for p in found] if is_remote(pattern) else found
