"""The key service: a Unix socket server, one thread per connection, one request at a time per
connection (docs/KEYSERVICE.md). Every operation is a plain function of the layers below; this
module only reads who is asking (:mod:`.peer`), checks each request's shape and answers."""

from __future__ import annotations

import base64
import binascii
import contextlib
import grp
import json
import os
import pwd
import signal
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..access.policy import Policy
from ..access.release import release_study_key
from ..access.service import error_reply, read_message, write_message
from ..audit import AuditLog, export, verify_log
from ..audit import checkpoint as ckpt
from ..audit.record import utc_now
from ..core.errors import MedsecError
from ..keys.identity import Recipient
from ..keys.transit import SiteKey, TransitKey, TransitRecipient
from .peer import Peer, peer_of

#: Record fields a client may give for a record of its own (``who`` is the service's to set).
RECORD_FIELDS = ("action", "outcome", "event", "purpose", "purpose_text", "key_id", "study", "detail")


@dataclass
class KeyServiceConfig:
    """What the service holds: the site keys (private keys, or Transit keys in OpenBao), the log,
    the policy, and who is a steward (users named, or members of a group)."""

    socket: Path
    identities: list[SiteKey]
    log: AuditLog
    policy: Policy
    stewards: frozenset[str] = frozenset()
    steward_group: str | None = None
    checkpoint_seconds: float = 3600.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_steward(self, peer: Peer) -> bool:
        if peer.user in self.stewards:
            return True
        if self.steward_group is None:
            return False
        try:
            group = grp.getgrnam(self.steward_group)
        except KeyError:
            return False
        return peer.user in group.gr_mem or peer.gid == group.gr_gid


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MedsecError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MedsecError(f"{what}: not valid base64") from None


def _text(value: Any, what: str, limit: int = 1024) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise MedsecError(f"{what}: expected text of at most {limit} characters")
    return value


def _own(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Records the caller may read: their own, or every record for a steward; filtered."""
    user = None if config.is_steward(peer) else peer.user
    records = list(
        config.log.records(
            study=_text(request.get("study"), "study"), user=user, since=_text(request.get("since"), "since", 64)
        )
    )
    limit = request.get("limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        records = records[-limit:]
    return records


def op_unlock(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    name = _text(request.get("path"), "path") or "container"
    release = release_study_key(
        _b64(request.get("header"), f"{name}: header"),
        _b64(request.get("index"), f"{name}: index"),
        name=name,
        identities=config.identities,
        log=peer.log(config.log, request.get("where")),
        policy=config.policy,
        subject=peer.user,
        purpose=_text(request.get("purpose"), "purpose", 64),
        purpose_text=_text(request.get("purpose_text"), "purpose_text", 1000),
        action=_text(request.get("action"), "action", 32) or "decrypt",
    )
    return release.reply()


def op_record(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    fields = {k: request[k] for k in RECORD_FIELDS if k in request}
    rec = peer.log(config.log, request.get("where")).append(**fields)
    return {"seq": rec["seq"], "hash": rec["hash"]}


def op_authorize(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    projects = request.get("projects") or []
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise MedsecError("projects: expected a list of names")
    decision = config.policy.check(
        peer.user,
        _text(request.get("action"), "action", 32) or "",
        _text(request.get("object"), "object", 128) or "",
        _text(request.get("purpose"), "purpose", 64) or "",
        projects=projects,
    )
    return {"allowed": decision.allowed, "rule": decision.rule, "reason": decision.reason}


def op_records(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    return {"records": _own(peer, config, request)}


def op_verify(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    report = verify_log(config.log.path, config.log.checkpoints_path)  # the service's own checkpoint key
    return {
        "valid": report.ok,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "first_bad_line": report.first_bad_line,
        "uncovered": report.uncovered,
        "message": report.message,
    }


def op_checkpoint(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    if not config.is_steward(peer):
        raise MedsecError(f"{peer.user} is not a steward of this key service: checkpoints are a steward's")
    cp = config.log.checkpoint()
    return {k: cp[k] for k in ("size", "time", "key_id", "hash")}


def op_export(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    records = _own(peer, config, request)
    fmt = request.get("format")
    if fmt == "fhir":
        return {"text": json.dumps(export.fhir_bundle(records, utc_now()), indent=2) + "\n"}
    if fmt == "dicom":
        return {"text": export.dicom_xml(records).decode("utf-8")}
    raise MedsecError("format: fhir or dicom")


def _recipient(r: Recipient) -> dict[str, Any]:
    item: dict[str, Any] = {"key_id": r.key_id, "pem": r.pem()}
    if isinstance(r, TransitRecipient):
        item.update(transit=r.name, version=r.version, min_decryption_version=r.min_decryption_version)
    return item


def op_recipients(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    for key in config.identities:
        if isinstance(key, TransitKey):
            key.refresh()  # its newest version, after a rotation
    return {"recipients": [_recipient(i.public) for i in config.identities]}


def op_checkpoint_key(peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    ident = ckpt.signing_identity()
    return {"key_id": ident.key_id, "pem": ident.public.pem()}


OPS: dict[str, Callable[[Peer, KeyServiceConfig, dict[str, Any]], dict[str, Any]]] = {
    "unlock": op_unlock,
    "record": op_record,
    "authorize": op_authorize,
    "records": op_records,
    "verify": op_verify,
    "checkpoint": op_checkpoint,
    "export": op_export,
    "recipients": op_recipients,
    "checkpoint_key": op_checkpoint_key,
}


def answer(name: str, peer: Peer, config: KeyServiceConfig, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to operation ``name`` for ``peer`` (both transports): the operation's result, or
    its MedsecError; another exception is logged by type and answered as an internal error."""
    op = OPS.get(name)
    try:
        if op is None:
            raise MedsecError(f"unknown operation {name[:40]!r}; one of {', '.join(OPS)}")
        return {"ok": True, **op(peer, config, request)}
    except MedsecError as exc:
        return error_reply(exc)
    except Exception as exc:  # a bug must not take the service down or leak a traceback
        print(
            f"medsec keyservice: error in {name[:40]!r} for {peer.user}: {type(exc).__name__}",
            file=sys.stderr,
            flush=True,
        )
        return {"ok": False, "error": "MedsecError", "message": f"internal error ({type(exc).__name__})"}


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        peer = peer_of(self.connection)
        config = self.server.config
        where = f"key service request from {peer.user} (pid {peer.pid})"
        while True:
            try:
                request = read_message(self.rfile, where)
            except MedsecError as exc:  # malformed: answer once, then hang up
                with contextlib.suppress(OSError):
                    write_message(self.wfile, error_reply(exc))
                return
            if request is None:
                return
            reply = answer(str(request.get("op")), peer, config, request)
            try:
                write_message(self.wfile, reply)
            except OSError:
                return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    config: KeyServiceConfig


def _checkpoint(config: KeyServiceConfig, why: str) -> None:
    try:
        if config.log.path.exists() and config.log.path.stat().st_size:
            cp = config.log.checkpoint()
            print(f"medsec keyservice: checkpoint ({why}) at record {cp['size']}", file=sys.stderr, flush=True)
    except MedsecError as exc:
        print(f"medsec keyservice: warning: checkpoint ({why}) not written: {exc}", file=sys.stderr, flush=True)


def serve(config: KeyServiceConfig, *, ready: Callable[[], None] | None = None) -> None:
    """Listen on ``config.socket`` until SIGTERM or SIGINT; sign a checkpoint every
    ``checkpoint_seconds`` and at shutdown."""
    path = config.socket
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of an earlier run
    server = _Server(str(path), _Handler)
    server.config = config
    os.chmod(path, 0o666)  # anyone may ask; the kernel says who asks
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="medsec-keyservice", daemon=True)
    thread.start()
    user = pwd.getpwuid(os.geteuid()).pw_name
    print(
        f"medsec keyservice: listening on {path} as {user}; keys: "
        f"{', '.join(i.key_id for i in config.identities)}; log: {config.log.path}",
        file=sys.stderr,
        flush=True,
    )
    if ready is not None:
        ready()
    try:
        while not stop.wait(config.checkpoint_seconds):
            _checkpoint(config, "timer")
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _checkpoint(config, "shutdown")
        print("medsec keyservice: stopped", file=sys.stderr, flush=True)


def stewards_from(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.strip() for n in names if n.strip())
