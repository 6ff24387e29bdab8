"""Who is acting and where, as a record states it: OS user (and the unverified hub claim),
host, process, library version, notebook, kernel, cell."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import TypedDict

from ..core.identity import hub_user_claim, os_user
from ..core.jupyter import jupyter_context
from ..core.version import __version__


class Who(TypedDict):
    """A record's ``who`` (``key_id`` is added by the caller)."""

    os_user: str
    hub_user: str | None


class Where(TypedDict):
    """A record's ``where``."""

    host: str
    pid: int
    version: str
    notebook: str | None
    kernel_id: str | None
    cell: int | None


@lru_cache(maxsize=4)
def _host(pid: int) -> str:
    return socket.gethostname()


def who() -> Who:
    """``os_user`` (verified: :func:`~medsec_nb.core.identity.os_user`) and ``hub_user`` (the
    unverified :func:`~medsec_nb.core.identity.hub_user_claim`)."""
    return {"os_user": os_user(), "hub_user": hub_user_claim()}


def where() -> Where:
    """``host``, ``pid``, ``version`` and, inside Jupyter, ``notebook``, ``kernel_id`` and ``cell``."""
    pid = os.getpid()
    notebook, kernel_id, cell = jupyter_context()
    return {
        "host": _host(pid),
        "pid": pid,
        "version": __version__,
        "notebook": notebook,
        "kernel_id": kernel_id,
        "cell": cell,
    }
