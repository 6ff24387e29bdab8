"""Where in Jupyter this process runs: kernel id, notebook, running cell (None outside)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

_KERNEL_FILE = re.compile(r"kernel-([0-9A-Za-z-]+)\.json$")


def _kernel_id(ip: Any) -> str | None:
    """From the kernel's connection file: the kernel app's config, else ``-f FILE`` in argv."""
    config = getattr(ip, "config", None) or {}
    app = config.get("IPKernelApp", {})
    conn = app.get("connection_file", None)
    if not conn and "-f" in sys.argv[:-1]:
        conn = sys.argv[sys.argv.index("-f") + 1]
    m = _KERNEL_FILE.search(str(conn or ""))
    return m.group(1) if m else None


def jupyter_context() -> tuple[str | None, str | None, int | None]:
    """(notebook path, kernel id, cell number) when running inside IPython/Jupyter."""
    notebook = os.environ.get("JPY_SESSION_NAME") or None
    ipython = sys.modules.get("IPython")
    ip = ipython.get_ipython() if ipython is not None else None
    if ipython is None or ip is None:
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
    return getattr(shell, "kernel", None) is not None  # ipykernel's shell has its kernel
