"""Who is on the other end: from the kernel for a Unix socket, from the Hub for a Hub token;
never from what they send."""

from __future__ import annotations

import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any

from ..access.release import AttributedLog, caller_log
from ..audit import AuditLog

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    pid: int | None  # None: the caller came through the Hub (its process is not known here)
    uid: int
    gid: int
    user: str  # the password database's name for uid, else "uid:<n>"; or the Hub's user name
    hub: bool = False  # the Hub vouched for ``user`` (a token), not the kernel

    def log(self, log: AuditLog, client_where: Any) -> AttributedLog:
        """``log`` writing as this caller, with the client's claims about where it runs."""
        return caller_log(log, self.user, self.pid, client_where, hub_user=self.user if self.hub else None)


def peer_of(sock: socket.socket) -> Peer:
    """The connected process's pid, uid and gid (``SO_PEERCRED``, read when it connected)."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid:{uid}"
    return Peer(pid, uid, gid, user)
