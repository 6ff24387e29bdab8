"""The process's folders: the per-user data folder, per-process runtime files of running
kernels, and write-once creation of the installation's secret files.

``MEDSEC_DATA_DIR`` overrides the data folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import platformdirs

from .atomic import atomic_file
from .errors import MedsecError

APP_NAME = "medsec-nb"
#: The runtime files of kernels' open studies: written by the notebook layer's registry, read by
#: the server (:func:`published_studies`).
STUDIES = "studies"
#: Ids of the entries processes publish (registry study ids): 16 hex digits, checked by readers
#: before one is used, e.g. in a request to a kernel.
ENTRY_ID = re.compile(r"[0-9a-f]{16}")


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


def process_file(kind: str, pid: int | None = None) -> Path:
    """``<data dir>/runtime/<kind>/<pid>.json``: what process ``pid`` (default: this one) publishes."""
    return runtime_dir(kind) / f"{pid or os.getpid()}.json"


def publish(kind: str, data: dict[str, Any] | None) -> None:
    """Replace this process's ``kind`` file with ``data`` (plus ``pid``), atomically, mode 0600;
    ``None`` removes it. OSError on failure (callers decide whether that only warns)."""
    path = process_file(kind)
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    with atomic_file(path, mode=0o600) as fh:
        fh.write(json.dumps({**data, "pid": os.getpid()}, sort_keys=True).encode("utf-8"))


def read_published(kind: str, *, strict: bool = False) -> list[dict[str, Any]]:
    """What every live process published as ``kind``. One rule for dead processes: the file of a
    process that no longer exists (its pid is the file's name) is removed and skipped. A file
    that is not a JSON object is skipped, or with ``strict`` raises MedsecError."""
    out = []
    for path in sorted(runtime_dir(kind).glob("*.json")):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict):
                raise ValueError
        except FileNotFoundError:  # withdrawn meanwhile
            continue
        except (OSError, ValueError, RecursionError) as exc:
            if strict:
                reason = exc.strerror if isinstance(exc, OSError) else "not a JSON object"
                raise MedsecError(f"{path}: unreadable runtime file ({reason})") from None
            continue
        out.append({**data, "pid": pid})  # the file's name, not what the file says
    return out


def published_studies() -> list[dict[str, Any]]:
    """Every live kernel's published open studies (``pid``, ``kernel_id``, ``studies``)."""
    return [d for d in read_published(STUDIES) if isinstance(d.get("studies"), list)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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
