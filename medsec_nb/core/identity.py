"""Who this process acts for: its effective OS user, from the kernel, never the environment."""

from __future__ import annotations

import os
import pwd


def os_user() -> str:
    """The process's effective OS user, from the kernel's uid and the password database
    (``uid:<n>`` without an entry). No environment variable (``LOGNAME``, ``USER``,
    ``JUPYTERHUB_USER``) can change it: this is the subject of every policy decision."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (some containers)
        return f"uid:{uid}"


def hub_user_claim() -> str | None:
    """``$JUPYTERHUB_USER``: an unverified claim (any process can set it), recorded as such
    and never used for a decision."""
    return os.environ.get("JUPYTERHUB_USER") or None
