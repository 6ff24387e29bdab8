"""A DIMSE peer as a pull source: C-FIND finds the study and its instances, C-GET or C-MOVE brings them.

Instances arrive as C-STORE sub-operations on pynetdicom's threads (on the C-GET association itself, or on
associations the peer opens to a temporary storage SCP for C-MOVE) and are handed to the caller through a
short queue: a slow writer makes the peer wait, and memory holds a few instances whatever the study's size.
Each arrives as the peer encodes it (the data set bytes, behind a File Meta header naming the transfer
syntax the association agreed); C-GET proposes every common transfer syntax so that the peer can send each
instance as it stores it.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..audit.record import is_uid
from .peer import Found, PacsError, StudyQuery, check_uids, one_study

#: Offered for each SOP Class of the study on a C-GET association, one presentation context each.
GET_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
MAX_CONTEXTS = 128
#: Instances waiting for the writer; a full queue makes the peer wait.
QUEUE_DEPTH = 4
PENDING, SUCCESS, OUT_OF_RESOURCES = (0xFF00, 0xFF01), 0x0000, 0xA702
_DONE = object()


class Dimse:
    """The DIMSE peer ``called_aet`` at ``host:port``, which must know us as ``calling_aet`` (and, for C-MOVE,
    at the address ``move_to`` that a temporary storage SCP listens on while the study arrives). ``timeout``
    bounds each network wait, ``max_time`` (seconds, optional) the whole retrieve."""

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str,
        calling_aet: str = "MEDSEC",
        *,
        move_to: tuple[str, int] | None = None,
        timeout: float = 60.0,
        max_time: float | None = None,
    ):
        self.host, self.port, self.called_aet, self.calling_aet = host, port, called_aet, calling_aet
        self.move_to, self.timeout, self.max_time = move_to, timeout, max_time
        self.protocol = "c-move" if move_to else "c-get"

    def __str__(self) -> str:
        return f"DICOM {self.called_aet}@{self.host}:{self.port}"

    def _ae(self) -> AE:
        ae = AE(self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 15.0)
        return ae

    def _associate(self, ae: AE, doing: str, **kwargs: Any) -> Association:
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, **kwargs)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise PacsError(
                f"{self}: {doing}: association rejected (is {self.called_aet} its AE title, "
                f"and does it know {self.calling_aet}?)"
            )
        raise PacsError(f"{self}: {doing}: no association (nothing answers there, or it broke off)")

    def _find(self, identifier: Dataset, doing: str) -> list[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae, doing)
        out = []
        try:
            with warnings.catch_warnings():  # pydicom warns of values that are not UIDs: what is used is checked
                warnings.simplefilter("ignore")
                for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
                    code = getattr(status, "Status", None)
                    if code is None:
                        raise PacsError(f"{self}: {doing}: the association broke off")
                    if code in PENDING and ds is not None:
                        out.append(ds)
                    elif code != SUCCESS:
                        raise PacsError(f"{self}: {doing}: C-FIND failed (status 0x{code:04X})")
        finally:
            assoc.release()
        return out

    def find(self, query: StudyQuery) -> Found:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = ""
        ident.NumberOfStudyRelatedInstances = ""
        ident.SOPClassesInStudy = ""
        for key, value in query.keys().items():
            setattr(ident, key, value)
        studies = self._find(ident, "searching for the study (C-FIND)")
        uid = one_study(self, query, [str(ds.StudyInstanceUID) for ds in studies if ds.get("StudyInstanceUID")])
        study = next(ds for ds in studies if ds.get("StudyInstanceUID") == uid)
        count = str(study.get("NumberOfStudyRelatedInstances", "") or "").strip()
        classes = study.get("SOPClassesInStudy") or []
        classes = [str(c) for c in (classes if isinstance(classes, MultiValue) else [classes]) if str(c)]
        check_uids(self, classes, "SOP Class UID")
        if count.isdigit() and int(count) and classes:
            return Found(uid, int(count), tuple(sorted(set(classes))))
        images = self._images(uid)  # the peer did not say: list the instances (slower)
        if not images:
            raise PacsError(f"{self}: study {uid} lists no instances")
        check_uids(self, list(images), "SOP Instance UID")
        check_uids(self, list(images.values()), "SOP Class UID")
        return Found(uid, len(images), tuple(sorted(set(images.values()))))

    def _images(self, uid: str) -> dict[str, str]:
        """SOP Instance UID -> SOP Class UID of each instance of study ``uid`` (IMAGE-level C-FIND)."""
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID = uid
        ident.SeriesInstanceUID = ""
        ident.SOPInstanceUID = ""
        ident.SOPClassUID = ""
        images = self._find(ident, "listing the study's instances (C-FIND)")
        return {str(ds.get("SOPInstanceUID", "")): str(ds.get("SOPClassUID", "")) for ds in images}

    def list_instances(self, found: Found) -> set[str]:
        return {uid for uid in self._images(found.study_uid) if is_uid(uid)}  # nothing else is repeated

    def retrieve(self, found: Found) -> Iterator[bytes]:
        """Each instance as it arrives (C-GET, or C-MOVE to a temporary storage SCP)."""
        items: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        stop = threading.Event()

        def on_store(event: evt.Event) -> int:
            data = event.encoded_dataset()
            while not stop.is_set():
                try:
                    items.put(data, timeout=0.2)
                    return SUCCESS
                except queue.Full:
                    continue
            return OUT_OF_RESOURCES

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = found.study_uid
        start = self._start_move if self.move_to else self._start_get
        assoc, responses, scp = start(found, identifier, on_store)
        doing = f"retrieving the study ({self.protocol.upper()})"

        def drive() -> None:
            """Run the retrieve's responses to the end, then tell the reader how it ended."""
            outcome: object = _DONE
            try:
                for status, _ in responses:
                    code = getattr(status, "Status", None)
                    if code is None:
                        outcome = PacsError(f"{self}: {doing}: connection dropped mid-transfer")
                        break
                    if code not in PENDING:
                        if code != SUCCESS:
                            outcome = PacsError(f"{self}: {doing}: the peer reports failure (status 0x{code:04X})")
                        break
            except Exception as exc:  # pynetdicom's thread must not die silently
                outcome = PacsError(f"{self}: {doing}: {type(exc).__name__}")
            while not stop.is_set():
                try:
                    items.put(outcome, timeout=0.2)
                    return
                except queue.Full:
                    continue

        driver = threading.Thread(target=drive, name="medsec-pull", daemon=True)
        driver.start()
        ended = False
        deadline = None if self.max_time is None else time.monotonic() + self.max_time
        try:
            while (item := self._next(items, deadline, doing)) is not _DONE:
                if isinstance(item, PacsError):
                    ended = True
                    raise item
                yield item
            ended = True
        finally:
            stop.set()
            if assoc.is_established and ended:
                assoc.release()
            elif assoc.is_established:
                assoc.abort()  # the reader stopped early: break off the transfer
            driver.join(self.timeout if ended else 1.0)  # after an abort it waits out pynetdicom's DIMSE timeout
            if scp is not None:
                scp.shutdown()

    def _next(self, items: queue.Queue[Any], deadline: float | None, doing: str) -> Any:
        """The next item from the retrieve, or a PacsError once ``deadline`` (monotonic) has passed."""
        if deadline is None:
            return items.get()
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            return items.get(timeout=left)
        except queue.Empty:
            raise PacsError(f"{self}: {doing}: not done within {self.max_time:g} s (--max-time)") from None

    def _start_get(
        self, found: Found, identifier: Dataset, on_store: Callable[[evt.Event], int]
    ) -> tuple[Association, Iterator[tuple[Dataset, Dataset | None]], None]:
        classes = found.sop_classes
        per_class = max(1, (MAX_CONTEXTS - 1) // len(classes))
        if len(classes) > MAX_CONTEXTS - 1:
            raise PacsError(f"{self}: the study has {len(classes)} SOP Classes, too many for C-GET; use C-MOVE")
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop_class in classes:
            for ts in GET_TRANSFER_SYNTAXES[:per_class]:
                ae.add_requested_context(sop_class, ts)
        roles = [build_role(c, scp_role=True) for c in classes]
        assoc = self._associate(
            ae, "retrieving the study (C-GET)", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        return assoc, assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet), None

    def _start_move(
        self, found: Found, identifier: Dataset, on_store: Callable[[evt.Event], int]
    ) -> tuple[Association, Iterator[tuple[Dataset, Dataset | None]], Any]:
        assert self.move_to is not None
        scp_ae = self._ae()
        scp_ae.require_calling_aet = [self.called_aet]  # only the PACS we asked may deliver
        for sop_class in found.sop_classes:
            scp_ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        try:
            scp = scp_ae.start_server(self.move_to, block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
            assert scp is not None  # block=False returns the server
        except OSError as exc:
            host, port = self.move_to
            raise PacsError(f"cannot listen on {host}:{port} for C-MOVE ({exc.strerror or exc})") from None
        try:
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = self._associate(ae, "retrieving the study (C-MOVE)")
        except BaseException:
            scp.shutdown()
            raise
        responses = assoc.send_c_move(identifier, self.calling_aet, StudyRootQueryRetrieveInformationModelMove)
        return assoc, responses, scp
