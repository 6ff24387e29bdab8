"""The client of the key service (docs/KEYSERVICE.md): one JSON object per line over a Unix
socket; the service knows who is asking from the kernel, decides, records, then releases.

``KeyService(path)`` talks to it; :class:`ServiceLog` and :class:`ServicePolicy` stand in for the
local log and policy in an :class:`~medsec_nb.access.gate.Access`, so a study opened through the
service records its reads and reveals in the service's log, under the caller's verified user.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..audit import AuditLog
from ..audit.context import where as local_where
from ..container.format import parse_json
from ..core import errors
from ..core.errors import FormatError, MedsecError, PolicyDeniedError
from ..keys.identity import Recipient, recipient_from_pem
from ..keys.transit import TransitRecipient
from .policy import Decision

VERSION = 1
MAX_LINE = 4 << 20
DEFAULT_SOCKET = "/run/medsec/keyservice.sock"


def resolve_keyservice(path: str | os.PathLike[str] | None) -> str | None:
    """The key service socket: the argument, else ``$MEDSEC_KEYSERVICE``, else None (local mode)."""
    value = path if path is not None else os.environ.get("MEDSEC_KEYSERVICE")
    return str(value) if value else None


def encode_message(message: dict[str, Any]) -> bytes:
    """``message`` (``v`` added) as compact ASCII JSON, within :data:`MAX_LINE` (both transports)."""
    data = json.dumps({"v": VERSION, **message}, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(data) >= MAX_LINE:
        raise FormatError(f"key service message of {len(data)} bytes exceeds {MAX_LINE}")
    return data


def decode_message(data: bytes, where: str) -> dict[str, Any]:
    """A version-1 message from ``data``; FormatError for anything else, including more than
    :data:`MAX_LINE` bytes or deeper nesting than docs/FORMAT.md allows (both transports)."""
    if len(data) >= MAX_LINE:
        raise FormatError(f"{where}: message too long (at most {MAX_LINE} bytes)")
    obj = parse_json(data, where, "key service message")
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise FormatError(f"{where}: not a version {VERSION} key service message")
    return obj


def write_message(fh: BinaryIO, message: dict[str, Any]) -> None:
    """Send ``message`` as one line."""
    fh.write(encode_message(message) + b"\n")
    fh.flush()


def read_message(fh: BinaryIO, where: str) -> dict[str, Any] | None:
    """The next line's message, or None at the end of the stream (see :func:`decode_message`)."""
    line = fh.readline(MAX_LINE + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise FormatError(f"{where}: message too long or cut off (at most {MAX_LINE} bytes per line)")
    return decode_message(line[:-1], where)


def client_where() -> dict[str, Any]:
    """What a client says about where it runs (recorded by the service as claims)."""
    here = local_where()
    return {"notebook": here.get("notebook"), "kernel_id": here.get("kernel_id"), "cell": here.get("cell")}


def error_reply(exc: MedsecError) -> dict[str, Any]:
    """A failed reply: the error's class name and its one-line message."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return {"ok": False, "error": type(exc).__name__, "message": text[:1000]}


def _raise(reply: dict[str, Any]) -> None:
    message = str(reply.get("message") or "the key service refused the request")[:1000]
    name = str(reply.get("error"))
    if name == "PolicyDeniedError":
        raise PolicyDeniedError(Decision(False, None, message))
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, MedsecError) and cls is not PolicyDeniedError:
        raise cls(message)
    raise MedsecError(message)


class KeyService:
    """A connection to the key service at ``path`` (one request at a time; thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._fh: BinaryIO | None = None

    def __repr__(self) -> str:
        return f"KeyService({self.path!r})"

    def _connect(self) -> BinaryIO:
        if self._fh is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise MedsecError(
                    f"key service {self.path}: cannot connect ({exc.strerror or exc}); is `medsec keyservice` running?"
                ) from None
            self._sock, self._fh = sock, cast(BinaryIO, sock.makefile("rwb"))
        return self._fh

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
            if self._sock is not None:
                self._sock.close()
            self._sock = self._fh = None

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; the reply's fields, or the MedsecError the service named."""
        with self._lock:
            try:
                fh = self._connect()
                write_message(fh, {"op": op, **fields})
                reply = read_message(fh, f"key service {self.path}")
            except OSError as exc:
                self._drop()
                raise MedsecError(f"key service {self.path}: connection lost ({exc.strerror or exc})") from None
            except MedsecError:
                self._drop()
                raise
        if reply is None:
            self.close()
            raise MedsecError(f"key service {self.path}: closed the connection without answering")
        if reply.get("ok") is not True:
            _raise(reply)
        return reply

    def _drop(self) -> None:
        for part in (self._fh, self._sock):
            if part is not None:
                part.close()
        self._sock = self._fh = None

    def unlock(
        self,
        path: str | os.PathLike[str],
        raw_header: bytes,
        index_ct: bytes,
        *,
        purpose: str,
        purpose_text: str | None,
        action: str,
    ) -> tuple[bytes, str]:
        """(study key, key id) for the container at ``path``, after the service decided and recorded."""
        reply = self.call(
            "unlock",
            path=str(path),
            header=base64.b64encode(raw_header).decode("ascii"),
            index=base64.b64encode(index_ct).decode("ascii"),
            purpose=purpose,
            purpose_text=purpose_text,
            action=action,
            where=client_where(),
        )
        try:
            key = base64.b64decode(str(reply["study_key"]), validate=True)
        except (KeyError, ValueError):
            raise FormatError(f"key service {self.path}: malformed unlock reply") from None
        if len(key) != 32:
            raise FormatError(f"key service {self.path}: malformed unlock reply")
        return key, str(reply.get("key_id") or "keyservice")

    def recipients(self) -> list[Recipient]:
        """The site's public keys, to encrypt studies to the site (no private key leaves it)."""
        out = []
        for item in self.call("recipients").get("recipients") or []:
            pem = item.get("pem") if isinstance(item, dict) else None
            if not isinstance(pem, str):
                raise FormatError(f"key service {self.path}: malformed recipients reply")
            recipient = recipient_from_pem(pem, f"key service {self.path}")
            name, version, minimum = item.get("transit"), item.get("version"), item.get("min_decryption_version", 1)
            if name is not None:  # a Transit key in OpenBao: its stanza names the key and version
                ints = [v for v in (version, minimum) if isinstance(v, int) and not isinstance(v, bool)]
                if not isinstance(name, str) or len(ints) != 2:
                    raise FormatError(f"key service {self.path}: malformed recipients reply")
                recipient = TransitRecipient(recipient.key, name, ints[0], ints[1])
            out.append(recipient)
        if not out:
            raise MedsecError(f"key service {self.path}: holds no site key")
        return out


class ServiceLog(AuditLog):
    """Records go to the key service's log (the service sets ``who``); nothing is written here."""

    def __init__(self, service: KeyService):  # no local file: no super().__init__
        self.service = service
        self.path = Path(service.path)
        self.checkpoints_path = self.path

    def __repr__(self) -> str:
        return f"ServiceLog({self.service.path!r})"

    def append(self, **fields: Any) -> dict[str, Any]:
        fields.pop("who", None)  # the service decides who
        reply = self.service.call("record", **{**fields, "where": client_where()})
        return {**fields, "seq": reply.get("seq"), "hash": reply.get("hash")}


class ServicePolicy:
    """The site policy, asked through the key service (which alone can read it)."""

    def __init__(self, service: KeyService):
        self.service = service
        self.path = f"key service {service.path}"

    def check(self, subject: str, action: str, obj: str, purpose: str, *, projects: Iterable[str] = ()) -> Decision:
        """The service's decision for the caller (``subject`` is ignored: the service knows it)."""
        reply = self.service.call("authorize", action=action, object=obj, purpose=purpose, projects=list(projects))
        rule = reply.get("rule")
        return Decision(
            bool(reply.get("allowed")),
            [str(r) for r in rule] if isinstance(rule, list) else None,
            str(reply.get("reason") or ""),
        )
