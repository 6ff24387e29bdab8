"""Process hardening for a kernel that holds decrypted studies: no core dumps, no ptrace.

Swap cannot be controlled from inside the process (see docs/NOTEBOOK.md); ``swap_devices``
only reports whether any is active.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

_PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class Hardening:
    """What :func:`harden_process` achieved in this process."""

    core_dumps_disabled: bool  #: RLIMIT_CORE is 0 (soft and hard)
    undumpable: bool  #: Linux PR_SET_DUMPABLE is 0: no core, no same-user ptrace or /proc/PID/mem
    swap: tuple[str, ...]  #: active swap devices or files (from /proc/swaps); empty if none or unknown


def _limit_core() -> bool:
    try:
        import resource
    except ImportError:  # not POSIX
        return False
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        return False
    return resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)


def _set_undumpable() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded in this process
        return libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def swap_devices() -> tuple[str, ...]:
    """Active swap areas as listed in /proc/swaps (Linux); empty elsewhere."""
    try:
        with open("/proc/swaps", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return ()
    return tuple(line.split()[0] for line in lines if line.strip())


def harden_process() -> Hardening:
    """Disable core dumps for this process (irreversibly) and, on Linux, mark it undumpable.

    Idempotent and cheap; ``%load_secure_study`` calls it before decrypting anything.
    """
    return Hardening(_limit_core(), _set_undumpable(), swap_devices())
