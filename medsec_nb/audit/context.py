"""Who is acting and where: OS and JupyterHub user, host, process, library version, notebook."""

from __future__ import annotations

import os
import pwd
import re
import socket
import sys
from functools import lru_cache
from typing import Any

_KERNEL_FILE = re.compile(r"kernel-([0-9A-Za-z-]+)\.json$")


@lru_cache(maxsize=4)
def _static(pid: int) -> tuple[str, str]:
    from .. import __version__
    return socket.gethostname(), __version__


def os_user() -> str:
    """The process's effective OS user, from the kernel's uid and the password database
    (``uid:<n>`` without an entry). No environment variable (``LOGNAME``, ``USER``,
    ``JUPYTERHUB_USER``) can change it: this is the subject of every policy decision."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:                  # no passwd entry (some containers)
        return f"uid:{uid}"


def hub_user_claim() -> str | None:
    """``$JUPYTERHUB_USER``: an unverified claim (any process can set it), recorded as such
    and never used for a decision."""
    return os.environ.get("JUPYTERHUB_USER") or None


def who() -> dict[str, Any]:
    """``os_user`` (verified, :func:`os_user`) and ``hub_user`` (the unverified
    :func:`hub_user_claim`)."""
    return {"os_user": os_user(), "hub_user": hub_user_claim()}


def _kernel_id(ip: Any) -> str | None:
    """From the kernel's connection file: the kernel app's config, else ``-f FILE`` in argv."""
    config = getattr(ip, "config", None) or {}
    app = config["IPKernelApp"] if "IPKernelApp" in config else {}
    conn = app["connection_file"] if "connection_file" in app else None
    if not conn and "-f" in sys.argv[:-1]:
        conn = sys.argv[sys.argv.index("-f") + 1]
    m = _KERNEL_FILE.search(str(conn or ""))
    return m.group(1) if m else None


def _jupyter() -> tuple[str | None, str | None, int | None]:
    """(notebook path, kernel id, cell number) when running inside IPython/Jupyter."""
    notebook = os.environ.get("JPY_SESSION_NAME") or None
    ipython = sys.modules.get("IPython")
    ip = ipython.get_ipython() if ipython is not None else None
    if ip is None:
        return notebook, None, None
    session = getattr(ip, "user_ns", {}).get("__session__")
    if isinstance(session, str) and session:
        notebook = session
    count = getattr(ip, "execution_count", None)
    if not isinstance(count, int):
        return notebook, _kernel_id(ip), None
    # IPython 9 counts the running cell before executing it, IPython 8 after
    running = count - 1 if ipython.version_info[0] >= 9 else count
    return notebook, _kernel_id(ip), running


def in_kernel() -> bool:
    """Whether this process is a Jupyter (ipykernel) kernel."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None          # ipykernel's shell has its kernel


def where() -> dict[str, Any]:
    """``host``, ``pid``, ``version`` and, inside Jupyter, ``notebook``, ``kernel_id`` and ``cell``."""
    pid = os.getpid()
    host, version = _static(pid)
    notebook, kernel_id, cell = _jupyter()
    return {"host": host, "pid": pid, "version": version, "notebook": notebook, "kernel_id": kernel_id,
            "cell": cell}
