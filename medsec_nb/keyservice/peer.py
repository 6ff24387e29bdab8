"""Who is on the other end of a Unix socket, from the kernel: never from what they send."""

from __future__ import annotations

import pwd
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str  # the password database's name for uid, else "uid:<n>"


def peer_of(sock: socket.socket) -> Peer:
    """The connected process's pid, uid and gid (``SO_PEERCRED``, read when it connected)."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid:{uid}"
    return Peer(pid, uid, gid, user)
