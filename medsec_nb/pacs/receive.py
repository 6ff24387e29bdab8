"""``medsec receive``: a C-STORE SCP that encrypts each incoming study into its own container.

Instances are checked and split as they arrive (a bad one is answered with a failure status),
then handed to one writer thread per study that encrypts them straight into the container's
temporary file: no plaintext reaches the disk and memory holds only a few instances per
study (a bounded queue; a slow disk slows the sender down). A study is complete when every
association that sent to it has ended and ``quiet`` seconds have passed since its last
instance: with ``quiet=0`` each association gives its own container; a larger ``quiet``
gathers a study sent over several associations into one. Stopping (SIGTERM in the CLI)
aborts open associations, then writes every instance already answered with success.

A hostile or broken sender is bounded: at most ``max_studies_per_association`` and ``max_studies``
studies are open at once, an instance larger than ``max_instance_bytes`` is refused while it
arrives (its bytes are dropped, not buffered), a PDU longer than :data:`MAX_PDU` closes the
connection, and a refused calling AE title is recorded at most once a minute, with a count.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from Crypto.Hash import SHA256
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.transport import ThreadedAssociationServer

from ..access.gate import EVENT_SECURITY, container_id, resolve_purpose
from ..audit import AuditLog
from ..audit.record import is_uid
from ..container.sources import SourceInstance, split_instance
from ..container.writer import write_container
from ..core.errors import MedsecError
from ..keys.identity import as_recipient
from .policy import PolicyArg, allow_receive, pacs_access

LOG = logging.getLogger("medsec_nb.pacs.receive")
EVENT_IMPORT = "110107"
VERIFICATION = "1.2.840.10008.1.1"
#: Instances waiting for a study's writer; a full queue makes the sender wait.
QUEUE_DEPTH = 8
#: C-STORE statuses (PS3.4 B.2.3).
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
#: Studies open at once, in one association and in all; a new study beyond either is answered 0xA700.
MAX_STUDIES_PER_ASSOCIATION, MAX_STUDIES = 16, 64
#: The largest data set accepted by default (bytes); a larger one is answered 0xA700.
MAX_INSTANCE_BYTES = 1 << 30
#: The PDU length we announce; a peer sending a longer PDU is cut off before it is read.
MAX_PDU = 4 << 20
#: A DIMSE command set is a few hundred bytes; one longer than this cuts the peer off.
MAX_COMMAND_BYTES = 1 << 16
#: A refused calling AE title is recorded at most once per this many seconds (with a count).
DENIED_INTERVAL = 60.0


def image_storage_classes() -> list[str]:
    """Storage SOP Classes whose name says they hold images (``... Image Storage``)."""
    every = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    return [uid for uid in every if "Image Storage" in UID(uid).name]


@dataclass(frozen=True)
class Received:
    """A container written by the receiver."""

    path: Path
    study_uid: str
    instances: int
    callers: tuple[str, ...]


@dataclass(eq=False)
class _Study:
    """One study being received: its writer thread and the associations that sent to it."""

    key: str  # the study UID, with the association's id when each association gets its own container
    uid: str
    path: Path
    queue: queue.Queue[SourceInstance | None] = field(default_factory=lambda: queue.Queue(QUEUE_DEPTH))
    sops: set[str] = field(default_factory=set)
    associations: list[Association] = field(default_factory=list)
    callers: set[str] = field(default_factory=set)
    last: float = field(default_factory=time.monotonic)
    error: BaseException | None = None
    thread: threading.Thread | None = None
    opened: threading.Event = field(default_factory=threading.Event)  # the temporary file exists, or error is set
    container_id: str | None = None
    ended: bool = False  # the end marker was taken from the queue

    def items(self) -> Iterator[SourceInstance]:
        self.opened.set()  # write_container asks for instances once its temporary file is open
        while (inst := self.queue.get()) is not None:
            yield inst
        self.ended = True

    def drain(self) -> None:
        """Take instances until the end marker: after a failure, so that senders never block."""
        while not self.ended:
            self.ended = self.queue.get() is None

    def idle(self, now: float, quiet: float) -> bool:
        return now - self.last >= quiet and not any(a.is_alive() for a in self.associations)


class _Throttle:
    """At most one audit record per key per ``interval`` seconds; the events held back are counted into the
    next record (or the one :meth:`due` gives). Past ``keys`` keys at once, new ones share the key ``*``."""

    def __init__(self, interval: float, keys: int = 64):
        self.interval, self.keys = interval, keys
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (time of its last record, events held back since)
        self._lock = threading.Lock()

    def admit(self, key: str, now: float) -> tuple[str, int] | None:
        """The key and count to record now, or None (counted, recorded later)."""
        with self._lock:
            if key not in self._seen and len(self._seen) >= self.keys:
                self._seen = {k: v for k, v in self._seen.items() if v[1] or now - v[0] < self.interval}
                if len(self._seen) >= self.keys:
                    key = "*"
            last, held = self._seen.get(key, (now - self.interval, 0))
            if now - last < self.interval:
                self._seen[key] = (last, held + 1)
                return None
            self._seen[key] = (now, 0)
            return key, held + 1

    def due(self, now: float, everything: bool = False) -> list[tuple[str, int]]:
        """Keys whose held-back events are a full interval old (or all of them), with their counts."""
        with self._lock:
            out = [
                (k, held)
                for k, (last, held) in self._seen.items()
                if held and (everything or now - last >= self.interval)
            ]
            for k, _ in out:
                self._seen[k] = (now, 0)
            return out


def _out_name(uid: str, folder: Path) -> Path:
    """``<UTC time>-<12 hex digits of the UID's SHA-256>.msec``: unique, sortable, no UID in the name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"{stamp}-{SHA256.new(uid.encode()).hexdigest()[:12]}.msec"


class Receiver:
    """A running C-STORE SCP (see the module docstring); ``start()``, then ``stop()``.

    Only ``allowed_callers`` (calling AE titles) may associate unless ``any_caller``; only image
    Storage SOP Classes are accepted unless ``allow_non_image``. Every container written, every
    failure and every refused association is recorded in the audit log with ``purpose``. The access
    policy (``policy``, or the key service's: ``keyservice``, else ``$MEDSEC_KEYSERVICE``, whose log then
    records) must allow the local user action ``receive`` (:mod:`.policy`), else nothing listens.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        recipients: Iterable[Any],
        *,
        ae_title: str = "MEDSEC",
        host: str = "127.0.0.1",
        port: int = 11112,
        allowed_callers: Iterable[str] = (),
        any_caller: bool = False,
        allow_non_image: bool = False,
        quiet: float = 0.0,
        purpose: str | None = None,
        audit_log: AuditLog | str | os.PathLike[str] | None = None,
        max_instance_bytes: int = MAX_INSTANCE_BYTES,
        max_studies: int = MAX_STUDIES,
        max_studies_per_association: int = MAX_STUDIES_PER_ASSOCIATION,
        policy: PolicyArg = None,
        keyservice: str | os.PathLike[str] | None = None,
    ):
        self.out_dir = Path(out_dir)
        if not self.out_dir.is_dir():
            raise MedsecError(f"{self.out_dir}: no such folder (the received studies are written there)")
        self.recipients = [as_recipient(r) for r in recipients]
        if not self.recipients:
            raise MedsecError("give at least one recipient (-r KEY.pub or --to-keyservice SOCKET)")
        self.callers = [c.strip() for c in allowed_callers if c.strip()]
        if not self.callers and not any_caller:
            raise MedsecError("name the AE titles allowed to send (--allow-caller AE), or accept any (--any-caller)")
        self.purpose = resolve_purpose(purpose)
        access = pacs_access(self.purpose, audit_log=audit_log, policy=policy, keyservice=keyservice)
        self.log = allow_receive(access, ae_title)
        self.ae_title, self.address, self.quiet = ae_title, (host, port), max(0.0, quiet)
        self.allow_non_image = allow_non_image
        self.max_instance_bytes = max_instance_bytes
        self.max_studies, self.max_studies_per_association = max_studies, max_studies_per_association
        self.written: list[Received] = []
        self._studies: dict[str, _Study] = {}
        self._lock = threading.Lock()
        self._denied = _Throttle(DENIED_INTERVAL)
        self._oversized: weakref.WeakSet[io.BytesIO] = weakref.WeakSet()  # data sets whose bytes were dropped
        self._cut: weakref.WeakSet[Association] = weakref.WeakSet()  # peers to disconnect at their next PDU
        self._told: weakref.WeakSet[Association] = weakref.WeakSet()  # associations already logged as over a cap
        self._stopping = threading.Event()
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._closer: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful with ``port=0``)."""
        return self._server.server_address[1] if self._server else self.address[1]

    def start(self) -> Receiver:
        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = self.callers
        ae.maximum_pdu_size = MAX_PDU
        classes = (
            [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
            if self.allow_non_image
            else image_storage_classes()
        )
        for uid in classes:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_DATA_RECV, self._on_data),
        ]
        try:
            self._server = ae.start_server(self.address, block=False, evt_handlers=handlers)  # type: ignore[arg-type]
        except OSError as exc:
            raise MedsecError(f"{self.address[0]}:{self.address[1]}: cannot listen ({exc.strerror or exc})") from None
        self._ae = ae
        self._closer = threading.Thread(target=self._close_idle, name="medsec-receive-closer", daemon=True)
        self._closer.start()
        LOG.info(
            "listening as %s on %s:%d; callers %s; %s; writing to %s",
            self.ae_title,
            self.address[0],
            self.port,
            ", ".join(self.callers) or "any",
            "all storage classes" if self.allow_non_image else "image storage classes only",
            self.out_dir,
        )
        return self

    def stop(self) -> list[Received]:
        """Refuse new associations, abort open ones, write every accepted instance; the containers written."""
        self._stopping.set()
        if self._ae is not None:
            open_assocs = list(self._ae.active_associations)
            self._ae.shutdown()
            for assoc in open_assocs:
                assoc.join(timeout=30)
        if self._closer is not None:
            self._closer.join()
        with self._lock:
            pending = list(self._studies.values())
            self._studies.clear()
        for study in pending:
            self._finish(study)
        self._record_denied(time.monotonic(), everything=True)
        LOG.info("stopped; %d container(s) written", len(self.written))
        return self.written

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ event handlers

    def _on_rejected(self, event: evt.Event) -> None:
        caller = event.assoc.requestor.ae_title
        admitted = self._denied.admit(caller, time.monotonic())
        if admitted is not None:  # else counted into this caller's next record (a flood is not a flood of records)
            LOG.warning("refused an association from %r at %s: calling AE title not allowed", caller, _peer(event))
            self._record_denial(*admitted)

    def _record_denial(self, caller: str, count: int) -> None:
        detail = {"calling_ae": caller, "reason": "calling AE title", "count": count}
        self._record("receive", "denied", EVENT_SECURITY, None, detail)

    def _record_denied(self, now: float, everything: bool = False) -> None:
        for caller, count in self._denied.due(now, everything):
            LOG.warning("refused %d more association(s) from %r: calling AE title not allowed", count, caller)
            self._record_denial(caller, count)

    def _on_connect(self, event: evt.Event) -> None:
        """Bound what one read may take: pynetdicom reads a whole PDU into memory, whatever its announced length
        (``recv`` is where it asks for that length), so a longer one than we allow closes the connection."""
        assoc, sock = event.assoc, event.assoc.dul.socket
        if sock is None:
            return
        read = sock.recv

        def recv(n: int) -> bytearray:
            if assoc in self._cut or n > MAX_PDU + 6:  # the PDU's header is 6 bytes
                why = "a command set" if assoc in self._cut else f"a PDU of {n} bytes announced"
                LOG.warning("cut off %s at %s: %s, beyond the limits", assoc.requestor.ae_title, _peer(event), why)
                raise OSError("beyond the limits")  # pynetdicom: transport closed, the association ends
            return read(n)

        sock.recv = recv  # type: ignore[method-assign,assignment]

    def _on_data(self, event: evt.Event) -> None:
        """Before each PDU is added to the DIMSE message being assembled: drop the bytes of a data set larger
        than ``max_instance_bytes`` (it is refused when complete) and cut off an endless command set."""
        msg = event.assoc.dimse.message
        if msg is None:
            return
        if msg.encoded_command_set.tell() > MAX_COMMAND_BYTES:
            self._cut.add(event.assoc)
        data = msg.data_set
        if isinstance(data, io.BytesIO) and data.tell() > self.max_instance_bytes:
            data.seek(0)
            data.truncate()
            self._oversized.add(data)

    def _on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        refused = {str(cx.abstract_syntax) for cx in assoc.rejected_contexts}
        LOG.info(
            "association from %s at %s%s",
            assoc.requestor.ae_title,
            _peer(event),
            f"; refused {len(refused)} of the SOP classes it proposed" if refused else "",
        )
        LOG.debug("refused: %s", ", ".join(sorted(UID(uid).name for uid in refused)))

    def _on_store(self, event: evt.Event) -> int:
        assoc, caller = event.assoc, event.assoc.requestor.ae_title
        data = cast(C_STORE, event.request).DataSet
        if data is not None and (data in self._oversized or _length(data) > self.max_instance_bytes):
            LOG.warning("refused an instance from %s: larger than %d bytes", caller, self.max_instance_bytes)
            return OUT_OF_RESOURCES
        try:
            inst = split_instance(event.encoded_dataset(), "", f"instance from {caller}")
        except Exception as exc:  # whatever a sender puts in an instance is its failure, never a handler crash
            LOG.warning("refused an instance: %s", exc if isinstance(exc, MedsecError) else type(exc).__name__)
            return CANNOT_UNDERSTAND
        uid = inst.entry["study"]
        key = f"{uid} {id(assoc)}" if self.quiet == 0 else uid  # quiet 0: one container per association
        with self._lock:
            study = self._studies.get(key)
            if study is None:
                if full := self._full(assoc):
                    if assoc not in self._told:
                        self._told.add(assoc)
                        LOG.warning(
                            "association from %s at %s: new studies refused (0xA700): %s", caller, _peer(event), full
                        )
                    return OUT_OF_RESOURCES
                study = self._studies[key] = self._open(key, uid)
            if assoc not in study.associations:
                study.associations.append(assoc)  # the study stays open while this association lives
            study.last = time.monotonic()
        study.opened.wait()  # a study whose file cannot be made refuses its first instance already
        with self._lock:
            if study.error is not None:
                return OUT_OF_RESOURCES
            if inst.entry["sop"] in study.sops:
                LOG.info("duplicate instance from %s ignored (already received)", caller)
                return SUCCESS
            study.sops.add(inst.entry["sop"])
            inst.entry["path"] = f"IM{len(study.sops):05d}.dcm"
            study.callers.add(caller)
            study.last = time.monotonic()
        study.queue.put(inst)
        return SUCCESS

    def _full(self, assoc: Association) -> str:
        """Why a new study cannot be opened now ("" if it can); called holding the lock."""
        mine = sum(assoc in s.associations for s in self._studies.values())
        if mine >= self.max_studies_per_association:
            return f"{mine} studies open in this association (the limit)"
        if len(self._studies) >= self.max_studies:
            return f"{len(self._studies)} studies open in all (the limit)"
        return ""

    # ------------------------------------------------------------ studies

    def _open(self, key: str, uid: str) -> _Study:
        study = _Study(key, uid, _out_name(uid, self.out_dir))
        study.thread = threading.Thread(target=self._write, args=(study,), name="medsec-receive-writer", daemon=True)
        study.thread.start()
        LOG.info("new study -> %s", study.path.name)
        return study

    def _write(self, study: _Study) -> None:
        try:
            write_container(
                study.path, study.items(), None, self.recipients, progress=False, workers=1, overwrite=False
            )
            study.container_id = container_id(study.path)
        except BaseException as exc:  # recorded by _finish
            study.error = exc
            study.opened.set()
            study.drain()

    def _close_idle(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            self._record_denied(now)
            with self._lock:
                done = [s for s in self._studies.values() if s.idle(now, self.quiet)]
                for s in done:
                    del self._studies[s.key]
            for s in done:
                try:
                    self._finish(s)
                except Exception as exc:  # this thread must go on closing the other studies
                    LOG.error("%s: %s", s.path.name, exc if isinstance(exc, MedsecError) else type(exc).__name__)

    def _finish(self, study: _Study) -> None:
        study.queue.put(None)
        assert study.thread is not None
        study.thread.join()
        n, callers = len(study.sops), tuple(sorted(study.callers))
        fields: dict[str, Any] = {"instances": n, **({"study_uid": study.uid} if is_uid(study.uid) else {})}
        detail: dict[str, Any] = {"file": study.path.name, "calling_ae": list(callers)}
        if study.error is not None:
            reason = str(study.error) if isinstance(study.error, MedsecError) else type(study.error).__name__
            LOG.error("%s: NOT written (%s); %d instance(s) must be sent again", study.path.name, reason, n)
            self._record("receive", "failure", EVENT_IMPORT, fields, {**detail, "reason": reason[:500]})
            return
        fields["container_sha256"] = study.container_id
        self._record("receive", "success", EVENT_IMPORT, fields, detail)
        self.written.append(Received(study.path, study.uid, n, callers))
        LOG.info("wrote %s: %d instance(s) from %s", study.path.name, n, ", ".join(callers))

    def _record(
        self, action: str, outcome: str, event: str, study: dict[str, Any] | None, detail: dict[str, Any]
    ) -> None:
        try:
            self.log.append(
                action=action, outcome=outcome, event=event, purpose=self.purpose, study=study, detail=detail
            )
        except MedsecError as exc:
            LOG.error("audit record not written: %s", exc)


def _length(data: io.BytesIO) -> int:
    with data.getbuffer() as view:
        return view.nbytes


def _peer(event: evt.Event) -> str:
    peer = event.assoc.requestor
    return f"{peer.address}:{peer.port}"


def receive(
    out_dir: str | os.PathLike[str],
    recipients: Iterable[Any],
    *,
    stop: threading.Event,
    ready: threading.Event | None = None,
    **options: Any,
) -> list[Received]:
    """Run a :class:`Receiver` (same options) in the foreground until ``stop`` is set, then stop it
    cleanly; return the containers written. ``ready`` is set once it listens."""
    receiver = Receiver(out_dir, recipients, **options).start()
    try:
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    finally:
        written = receiver.stop()
    return written
