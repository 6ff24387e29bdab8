"""Where the audit files live, and write-once creation of the installation's secret files.

Environment overrides: ``MEDSEC_DATA_DIR`` (the data folder), ``MEDSEC_AUDIT_LOG`` (the log),
``MEDSEC_AUDIT_CHECKPOINTS`` (the checkpoint file), ``MEDSEC_AUDIT_CHECKPOINT_KEY`` (the
checkpoint signing key, a ``.key`` file with its ``.pub`` beside it).
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


def log_path(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$MEDSEC_AUDIT_LOG``, else ``<data dir>/audit.jsonl``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("MEDSEC_AUDIT_LOG")
    return Path(env).expanduser() if env else data_dir() / "audit.jsonl"


def checkpoints_path(log: Path, path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$MEDSEC_AUDIT_CHECKPOINTS``, else the log's name with suffix ``.checkpoints``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("MEDSEC_AUDIT_CHECKPOINTS")
    return Path(env).expanduser() if env else log.with_suffix(".checkpoints")


def checkpoint_key_path() -> tuple[Path, bool]:
    """The checkpoint signing key file and whether it is the default one (generated on first use)."""
    env = os.environ.get("MEDSEC_AUDIT_CHECKPOINT_KEY")
    if env:
        return Path(env).expanduser(), False
    return data_dir() / "audit-checkpoint.key", True


def pseudonym_secret_path() -> Path:
    return data_dir() / "audit-pseudonym.secret"


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
