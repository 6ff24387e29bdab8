"""Where the audit files live.

Environment overrides: ``MEDSEC_AUDIT_LOG`` (the log), ``MEDSEC_AUDIT_CHECKPOINTS`` (the
checkpoint file), ``MEDSEC_AUDIT_CHECKPOINT_KEY`` (the checkpoint signing key, a ``.key`` file
with its ``.pub`` beside it); the data folder is :func:`medsec_nb.core.runtime.data_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.runtime import data_dir


def log_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$MEDSEC_AUDIT_LOG``, else ``<data dir>/audit.jsonl``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("MEDSEC_AUDIT_LOG")
    return Path(env).expanduser() if env else data_dir() / "audit.jsonl"


def checkpoints_path(log: Path, path: str | os.PathLike[str] | None = None) -> Path:
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
