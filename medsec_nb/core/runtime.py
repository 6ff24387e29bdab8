"""The process's folders: the per-user data folder, per-process runtime files of running
kernels, and write-once creation of the installation's secret files.

``MEDSEC_DATA_DIR`` overrides the data folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import platformdirs

APP_NAME = "medsec-nb"


def data_dir() -> Path:
    """The per-user medsec data folder (created with mode 0700 when missing)."""
    env = os.environ.get("MEDSEC_DATA_DIR")
    folder = Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def runtime_dir(name: str) -> Path:
    """``<data dir>/runtime/<name>`` (created 0700): per-process state of running kernels."""
    folder = data_dir() / "runtime" / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def write_once(dest: Path, data: bytes, mode: int) -> bool:
    """Create ``dest`` with ``data`` unless it exists; True if this call created it.

    The file appears complete or not at all (written to a temporary name, fsynced, then
    hard-linked), so concurrent first users agree on one file.
    """
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
