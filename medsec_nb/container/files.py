"""Positional reads of a local container file (the reader's byte source; ``remote`` has the
same interface for fsspec URLs)."""

from __future__ import annotations

import os
import stat
from typing import Protocol

from ..core.errors import MedsecError


class ByteSource(Protocol):
    """What the reader reads a container through: :class:`LocalFile`, ``remote.FsspecFile``."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def readinto(self, offset: int, view: memoryview) -> int: ...

    def close(self) -> None: ...


class LocalFile:
    """Positional reads of a local file (thread-safe: ``os.pread``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise MedsecError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise MedsecError(f"{path}: is a folder, not a container") from None
        except OSError as exc:
            raise MedsecError(f"{path}: cannot open ({exc.strerror})") from None
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self.fd)
            raise MedsecError(
                f"{path}: is a folder, not a container" if stat.S_ISDIR(st.st_mode) else f"{path}: not a regular file"
            )
        self.size = st.st_size

    def readinto(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` from ``offset``; return the number of bytes read (short at end of file)."""
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n == 0:
                break
            done += n
        return done

    def read(self, offset: int, length: int) -> bytes:
        parts = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
