"""``medsec push``: a de-identified export sent to a research PACS over STOW-RS or C-STORE.

De-identification, the conformance report and the leak scan run over the whole study in memory
first (``study.export.send_deidentified``); only then is anything sent, and nothing is written to
disk. A destination is a DICOMweb base URL (``http[s]://host:port/dicom-web``: STOW-RS) or
``AE@host:port`` (C-STORE). A transfer that fails part-way says how many instances were sent.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydicom
from tqdm.auto import tqdm

from ..core.errors import MedsecError
from ..study.export import send_deidentified
from .peer import public_url

if TYPE_CHECKING:
    import requests

    from ..deid.export import ExportReport
    from ..study import Study

#: Instances per STOW-RS request.
STOW_BATCH = 16
#: C-STORE statuses that mean stored (success and the warnings of PS3.4 B.2.3).
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}
_DIMSE = re.compile(r"^([^@\s]{1,16})@([^:@\s]+):([0-9]{1,5})$")


@dataclass(frozen=True)
class Destination:
    """Where a push goes: a DICOMweb service (``url``) or a DICOM peer (``ae_title``, ``host``, ``port``)."""

    url: str | None = None
    ae_title: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``http[s]://...`` (STOW-RS) or ``AE@host:port`` (C-STORE); a one-line error otherwise."""
        if text.startswith(("http://", "https://")):
            return cls(url=text.rstrip("/"))
        m = _DIMSE.match(text)
        if not m or not 0 < int(m.group(3)) < 65536:
            raise MedsecError(f"{text}: not a destination (give http[s]://HOST:PORT/dicom-web or AE@HOST:PORT)")
        return cls(ae_title=m.group(1), host=m.group(2), port=int(m.group(3)))

    def __str__(self) -> str:
        """The destination as recorded and shown: a URL without credentials or query, or AE@host:port."""
        if self.url is None:
            return f"{self.ae_title}@{self.host}:{self.port}"
        return public_url(self.url)


def _datasets(instances: Iterable[bytes]) -> Iterable[pydicom.Dataset]:
    for data in instances:
        yield pydicom.dcmread(io.BytesIO(data))


def stow(
    destination: Destination,
    instances: list[bytes],
    progress: bool = True,
    *,
    session: requests.Session | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send ``instances`` (DICOM file bytes) with STOW-RS, :data:`STOW_BATCH` per request; ``session`` carries
    any authentication (``pacs.dicomweb.auth_session``), ``timeout`` bounds each wait for the server."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    assert destination.url is not None
    client = DICOMwebClient(destination.url, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)  # a failed push is retried by running it again
    sent = 0
    bar = tqdm(total=len(instances), unit="file", desc="push", disable=None if progress else True)
    try:
        for start in range(0, len(instances), STOW_BATCH):
            batch = instances[start : start + STOW_BATCH]
            try:
                answer = client.store_instances(list(_datasets(batch)))
            except requests.exceptions.Timeout:
                why = f"no answer within {timeout:g} s"
                raise MedsecError(_partial(destination, why, sent, len(instances))) from None
            except requests.exceptions.ConnectionError:
                raise MedsecError(
                    _partial(destination, "cannot connect (is the PACS up?)", sent, len(instances))
                ) from None
            except requests.exceptions.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else "?"
                raise MedsecError(_partial(destination, f"refused with HTTP {status}", sent, len(instances))) from None
            except requests.exceptions.RequestException as exc:
                why = f"transfer failed ({type(exc).__name__})"
                raise MedsecError(_partial(destination, why, sent, len(instances))) from None
            failed = len(answer.get("FailedSOPSequence", []) or [])
            if failed:
                raise MedsecError(_partial(destination, f"{failed} instance(s) refused", sent, len(instances)))
            sent += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return {"destination": str(destination), "protocol": "STOW-RS", "sent": sent}


def c_store(
    destination: Destination, instances: list[bytes], calling_ae: str = "MEDSEC", progress: bool = True
) -> dict[str, Any]:
    """Send ``instances`` (DICOM file bytes) over one C-STORE association, each in its own transfer syntax."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    headers = [pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True) for d in instances]
    for key in dict.fromkeys((str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers):
        ae.add_requested_context(*key)
    if len(ae.requested_contexts) > 128:
        raise MedsecError(f"{destination}: more than 128 SOP class / transfer syntax pairs in one study")
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "cannot connect (is the PACS up?)"
        raise MedsecError(_partial(destination, why, 0, len(instances)))
    sent = 0
    bar = tqdm(total=len(instances), unit="file", desc="push", disable=None if progress else True)
    try:
        for ds in _datasets(instances):
            status = assoc.send_c_store(ds)
            if not status or "Status" not in status:
                raise MedsecError(_partial(destination, "connection lost", sent, len(instances)))
            if int(status.Status) not in _STORED:
                why = f"instance {sent + 1} refused (status 0x{int(status.Status):04X})"
                raise MedsecError(_partial(destination, why, sent, len(instances)))
            sent += 1
            bar.update()
        assoc.release()
    finally:
        bar.close()
        if assoc.is_established:
            assoc.abort()
    return {"destination": str(destination), "protocol": "C-STORE", "sent": sent}


def _partial(destination: Destination, why: str, sent: int, total: int) -> str:
    return f"{destination}: {why}; {sent} of {total} instance(s) sent"


def push(
    source: str | os.PathLike[str] | Study,
    destination: str,
    *,
    calling_ae: str = "MEDSEC",
    progress: bool = True,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    **export: Any,
) -> ExportReport:
    """De-identify ``source`` (a DICOM folder, a ``.msec`` study or an open Study) in memory and send it to
    ``destination`` (``http[s]://.../dicom-web`` or ``AE@host:port``). ``export`` takes the keyword
    arguments of :func:`medsec_nb.study.export.send_deidentified` (``secret``, ``options``, ``purpose``,
    ``identity``, ...). ``session`` (authentication) and ``timeout`` (per wait, seconds) are for STOW-RS.
    Any leak-scanner hit: nothing is sent. Returns the conformance report."""
    dest = Destination.parse(destination)
    if session is not None and dest.url is None:
        raise MedsecError(f"{dest}: DICOMweb credentials are for an http[s] destination, not C-STORE")

    def send(instances: list[bytes]) -> dict[str, Any]:
        if dest.url is not None:
            return stow(dest, instances, progress, session=session, timeout=timeout)
        return c_store(dest, instances, calling_ae, progress)

    return send_deidentified(source, send, destination=str(dest), progress=progress, **export)
