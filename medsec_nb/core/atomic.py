"""Atomic file and folder creation: temporary name in the destination folder, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.ENOSYS}


def _exists(dest: Path) -> FileExistsError:
    return FileExistsError(f"{dest}: already exists (refusing to overwrite)")


def _place_exclusively(tmp: str, dest: Path) -> None:
    """Move ``tmp`` to ``dest`` unless ``dest`` exists, atomically (link, then unlink ``tmp``)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise _exists(dest) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if dest.exists():  # a file system without hard links: checked, then renamed
            raise _exists(dest) from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike[str], *, mode: int = 0o644, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``dest`` only if the block completes.

    On any exception the temporary file is removed and ``dest`` is untouched. With
    ``overwrite=False`` the file is put in place by a hard link, which fails if ``dest`` exists:
    a file that appears while the block runs is never replaced (FileExistsError).
    """
    dest = Path(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not overwrite and dest.exists():
        raise _exists(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, dest)
        else:
            _place_exclusively(tmp, dest)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``dest`` only if the block completes.

    ``dest`` must not exist (an empty folder is accepted and replaced). On any
    exception the temporary folder and everything in it is removed.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest}: exists and is not an empty folder")
    parent = dest.parent if str(dest.parent) else Path(".")
    created = [p for p in [parent, *parent.parents] if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=parent))
    try:
        yield tmp
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # folders this call made, innermost first
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
