"""Which studies this process holds open, published for the Jupyter server (no PHI, no keys).

Each process that opens a study inside a Jupyter kernel writes
``<data dir>/runtime/studies/<pid>.json`` (mode 0600, replaced atomically) listing its open
studies: an opaque id, the file's base name, the instance count, the purpose, who opened it
and when, plus the kernel id taken from the kernel's connection file
(:func:`medsec_nb.core.runtime.publish`). The notebook layer subscribes :func:`opened` and
:func:`withdrawn` to the study events; the server reads every file with
:func:`medsec_nb.core.runtime.read_published` and keeps the ones whose kernel is still running.
Outside a kernel nothing is written.

A kernel that opened a study also checkpoints each audit log it opened studies with when it
exits (a shutdown or restart runs ``atexit``; a killed kernel writes none): the signing happens
once, at exit, never on the open path.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import sys
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any

from ..audit import AuditLog, context
from ..audit.record import utc_now
from ..core import runtime
from ..core.errors import MedsecError

if TYPE_CHECKING:
    from ..study import Study

KIND = runtime.STUDIES

_lock = threading.Lock()
_open: dict[str, tuple[weakref.ref, dict[str, Any]]] = {}
_ids: weakref.WeakKeyDictionary[Study, str] = weakref.WeakKeyDictionary()
_kernel: list[str | None] = []  # the kernel id, looked up once
_logs: dict[str, AuditLog] = {}  # audit logs of the studies opened here: checkpointed at exit


def _kernel_id() -> str | None:
    if not _kernel:
        _kernel.append(context.where()["kernel_id"])
    return _kernel[0]


def _publish(kernel_id: str) -> None:
    """Rewrite this process's file; a failure only warns (the registry informs, it guards nothing)."""
    studies = [entry for _, entry in _open.values()]
    try:
        runtime.publish(KIND, {"kernel_id": kernel_id, "studies": studies} if studies else None)
    except OSError as exc:
        warnings.warn(
            f"the list of open studies for the lab panel was not updated ({exc.strerror or exc})",
            RuntimeWarning,
            stacklevel=3,
        )


def opened(study: Study) -> str | None:
    """Publish ``study`` as open in this kernel; returns its registry id (None outside a kernel)."""
    kernel_id = _kernel_id()
    if kernel_id is None:
        return None
    who = context.who()
    study_id = secrets.token_hex(8)
    entry = {
        "id": study_id,
        "name": os.path.basename(study.path),
        "instances": study.instance_count,
        "purpose": study.purpose,
        "user": who["os_user"],
        "opened": utc_now(),
    }
    log = study.audit_log
    where = os.path.abspath(log.path)  # the notebook may change directory before exit
    with _lock:
        _open[study_id] = (weakref.ref(study), entry)
        _ids[study] = study_id
        _publish(kernel_id)
        if not _logs:
            atexit.register(_checkpoint_at_exit)
        if where not in _logs:
            _logs[where] = AuditLog(where, checkpoints=os.path.abspath(log.checkpoints_path))
    return study_id


def _checkpoint_at_exit() -> None:
    """Sign the head of every audit log this kernel opened studies with (installation key);
    a failure is one line on the kernel's stderr: the records themselves are durable."""
    for log in _logs.values():
        try:
            log.checkpoint()
        except (MedsecError, OSError) as exc:
            print(
                f"medsec: warning: {log.checkpoints_path}: no checkpoint written at kernel shutdown ({exc}); "
                "run `medsec audit checkpoint`",
                file=sys.__stderr__,
            )


def withdrawn(study: Study) -> None:
    """Withdraw ``study`` (closed); nothing happens if it was never published."""
    with _lock:
        study_id = _ids.pop(study, None)
        if study_id is not None and _open.pop(study_id, None) is not None:
            _publish(_kernel_id())


def lookup(study_id: str) -> Study | None:
    """The open study published under ``study_id`` in this process, if any."""
    with _lock:
        item = _open.get(study_id)
    return item[0]() if item else None


@atexit.register
def _forget() -> None:
    if _open:
        with contextlib.suppress(OSError):
            runtime.publish(KIND, None)
