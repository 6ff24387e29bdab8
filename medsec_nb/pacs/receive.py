"""``medsec receive``: a C-STORE SCP that encrypts each incoming study into its own container.

Instances are checked and split as they arrive (a bad one is answered with a failure status),
then handed to one writer thread per study that encrypts them straight into the container's
temporary file: no plaintext reaches the disk and memory holds only a few instances per
study (a bounded queue; a slow disk slows the sender down). A study is complete when every
association that sent to it has ended and ``quiet`` seconds have passed since its last
instance: with ``quiet=0`` each association gives its own container; a larger ``quiet``
gathers a study sent over several associations into one. Stopping (SIGTERM in the CLI)
aborts open associations, then writes every instance already answered with success.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from Crypto.Hash import SHA256
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.association import Association
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.transport import ThreadedAssociationServer

from ..access.gate import EVENT_SECURITY, container_id, resolve_purpose
from ..audit import AuditLog
from ..audit.record import is_uid
from ..container.sources import SourceInstance, split_instance
from ..container.writer import write_container
from ..core.errors import MedsecError
from ..keys.identity import as_recipient

LOG = logging.getLogger("medsec_nb.pacs.receive")
EVENT_IMPORT = "110107"
VERIFICATION = "1.2.840.10008.1.1"
#: Instances waiting for a study's writer; a full queue makes the sender wait.
QUEUE_DEPTH = 8
#: C-STORE statuses (PS3.4 B.2.3).
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


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
    container_id: str | None = None
    ended: bool = False  # the end marker was taken from the queue

    def items(self) -> Iterator[SourceInstance]:
        while (inst := self.queue.get()) is not None:
            yield inst
        self.ended = True

    def drain(self) -> None:
        """Take instances until the end marker: after a failure, so that senders never block."""
        while not self.ended:
            self.ended = self.queue.get() is None

    def idle(self, now: float, quiet: float) -> bool:
        return now - self.last >= quiet and not any(a.is_alive() for a in self.associations)


def _out_name(uid: str, folder: Path) -> Path:
    """``<UTC time>-<12 hex digits of the UID's SHA-256>.msec``: unique, sortable, no UID in the name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"{stamp}-{SHA256.new(uid.encode()).hexdigest()[:12]}.msec"


class Receiver:
    """A running C-STORE SCP (see the module docstring); ``start()``, then ``stop()``.

    Only ``allowed_callers`` (calling AE titles) may associate unless ``any_caller``; only image
    Storage SOP Classes are accepted unless ``allow_non_image``. Every container written, every
    failure and every refused association is recorded in the audit log with ``purpose``.
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
        self.log = audit_log if isinstance(audit_log, AuditLog) else AuditLog(audit_log)
        self.ae_title, self.address, self.quiet = ae_title, (host, port), max(0.0, quiet)
        self.allow_non_image = allow_non_image
        self.written: list[Received] = []
        self._studies: dict[str, _Study] = {}
        self._lock = threading.Lock()
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
        ae.maximum_pdu_size = 0
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
        LOG.info("stopped; %d container(s) written", len(self.written))
        return self.written

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ event handlers

    def _on_rejected(self, event: evt.Event) -> None:
        caller = event.assoc.requestor.ae_title
        LOG.warning("refused an association from %r at %s: calling AE title not allowed", caller, _peer(event))
        self._record("receive", "denied", EVENT_SECURITY, None, {"calling_ae": caller, "reason": "calling AE title"})

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
        caller = event.assoc.requestor.ae_title
        try:
            inst = split_instance(event.encoded_dataset(), "", f"instance from {caller}")
        except MedsecError as exc:
            LOG.warning("refused an instance: %s", exc)
            return CANNOT_UNDERSTAND
        uid = inst.entry["study"]
        key = f"{uid} {id(event.assoc)}" if self.quiet == 0 else uid  # quiet 0: one container per association
        with self._lock:
            study = self._studies.get(key)
            if study is None:
                study = self._studies[key] = self._open(key, uid)
            if study.error is not None:
                return OUT_OF_RESOURCES
            if inst.entry["sop"] in study.sops:
                LOG.info("duplicate instance from %s ignored (already received)", caller)
                return SUCCESS
            study.sops.add(inst.entry["sop"])
            inst.entry["path"] = f"IM{len(study.sops):05d}.dcm"
            if event.assoc not in study.associations:
                study.associations.append(event.assoc)
            study.callers.add(caller)
            study.last = time.monotonic()
        study.queue.put(inst)  # the study stays open while this association lives
        return SUCCESS

    # ------------------------------------------------------------ studies

    def _open(self, key: str, uid: str) -> _Study:
        study = _Study(key, uid, _out_name(uid, self.out_dir))
        study.thread = threading.Thread(target=self._write, args=(study,), name="medsec-receive-writer", daemon=True)
        study.thread.start()
        LOG.info("new study -> %s", study.path.name)
        return study

    def _write(self, study: _Study) -> None:
        try:
            write_container(study.path, study.items(), None, self.recipients, progress=False, workers=1)
            study.container_id = container_id(study.path)
        except BaseException as exc:  # recorded by _finish
            study.error = exc
            study.drain()

    def _close_idle(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.monotonic()
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
