"""A real Orthanc PACS for the tests: Debian's ``/usr/sbin/Orthanc`` with its DICOMweb plugin, on 127.0.0.1.

Each :class:`Orthanc` has its own configuration, storage and index under a folder the test gives it, free HTTP
and DICOM ports, and the peers it may send to (``DicomModalities``: in the configuration at start or added later
with :meth:`Orthanc.set_modality`). Studies are loaded through its REST API (``POST /instances``) from bytes made
in memory (:func:`ct_study`, :func:`mr_study`, :func:`us_multiframe`): no plaintext file is written by the tests.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medsec_nb.container.sources import dataset_bytes
from medsec_nb.testdata import synthesize_datasets

BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Modality:
    """A DICOM peer Orthanc knows (it may C-MOVE / C-STORE to it and accepts its C-FIND / C-GET / C-MOVE)."""

    aet: str
    port: int
    host: str = "127.0.0.1"

    def config(self) -> dict[str, Any]:
        return {
            "AET": self.aet,
            "Host": self.host,
            "Port": self.port,
            "AllowEcho": True,
            "AllowFind": True,
            "AllowGet": True,
            "AllowMove": True,
            "AllowStore": True,
        }


@dataclass
class Orthanc:
    """One Orthanc process; :meth:`start` it, :meth:`stop` (or :meth:`kill`) it."""

    workdir: Path
    aet: str = "ORTHANC"
    modalities: dict[str, Modality] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # HTTP basic users (none: no authentication)
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log(self) -> Path:
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": f"medsec-test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "MaximumStorageCacheSize": 0,  # serve files from disk (a test may damage one there)
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "HttpDescribeErrors": True,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": False,
            "DicomScpTimeout": 30,
            "DicomModalities": {name: m.config() for name, m in self.modalities.items()},
            "DicomModalitiesInDatabase": False,
            "OverwriteInstances": True,
            "StableAge": 1,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def start(self, timeout: float = 30.0) -> Orthanc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [BINARY, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.get_json("/system")
                return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stop cleanly (SIGTERM, then SIGKILL if it does not exit in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill at once (a PACS that goes down mid-transfer)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    # -- REST ---------------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json") -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        for user, password in list(self.users.items())[:1]:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return bytes(resp.read())

    def get_json(self, path: str) -> Any:
        return json.loads(self.rest("GET", path))

    def post_json(self, path: str, payload: Any) -> Any:
        return json.loads(self.rest("POST", path, json.dumps(payload).encode()))

    def set_modality(self, name: str, modality: Modality) -> None:
        """Add or replace a peer while Orthanc runs (``PUT /modalities/{name}``)."""
        self.rest("PUT", f"/modalities/{name}", json.dumps(modality.config()).encode())
        self.modalities[name] = modality

    def upload(self, data: bytes) -> str:
        """Store one DICOM file's bytes (``POST /instances``); Orthanc's id of the instance."""
        answer = json.loads(self.rest("POST", "/instances", data, "application/dicom"))
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise RuntimeError(f"Orthanc did not store the instance: {answer}")
        return str(answer["ID"])

    def upload_study(self, instances: Iterable[bytes]) -> list[str]:
        return [self.upload(data) for data in instances]

    def study_id(self, study_uid: str) -> str:
        """Orthanc's id of the study with this Study Instance UID."""
        found = json.loads(self.rest("POST", "/tools/lookup", study_uid.encode(), "text/plain"))
        hits = [h for h in found if h["Type"] == "Study"]
        if not hits:
            raise KeyError(study_uid)
        return str(hits[0]["ID"])

    def instance_files(self, study_uid: str) -> dict[str, bytes]:
        """Every instance of the study as Orthanc stores it (``GET /instances/{id}/file``), by SOP Instance UID."""
        out = {}
        for inst in self.get_json(f"/studies/{self.study_id(study_uid)}/instances"):
            data = self.rest("GET", f"/instances/{inst['ID']}/file")
            out[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
        return out

    def storage_path(self, orthanc_id: str) -> Path:
        """Where Orthanc keeps an instance's file (to corrupt it in place for a test)."""
        uuid = self.get_json(f"/instances/{orthanc_id}/attachments/dicom/info")["Uuid"]
        return self.workdir / "storage" / uuid[0:2] / uuid[2:4] / uuid


# -- studies made in memory (fake patients only) ------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A study loaded into Orthanc: its UIDs and query keys, and Orthanc's ids of its instances."""

    kind: str
    study_uid: str
    accession: str
    patient_id: str
    patient_name: str
    instance_ids: list[str]


def _label(datasets: list[pydicom.Dataset], kind: str, n: int) -> None:
    for ds in datasets:
        ds.PatientName = f"Test^{kind}{n}"
        ds.PatientID = f"MEDSEC-{kind}-{n}"
        ds.AccessionNumber = f"ACC{kind}{n}"
        ds.StudyID = f"{kind}{n}"


def ct_study(n_slices: int = 40, rows: int | None = None, columns: int | None = None) -> list[pydicom.Dataset]:
    return synthesize_datasets(n_slices, rows=rows, columns=columns)


def mr_study(n_slices: int = 12) -> list[pydicom.Dataset]:
    return synthesize_datasets(n_slices, template=get_testdata_file("MR_small.dcm"))


def us_multiframe() -> list[pydicom.Dataset]:
    """pydicom-data's uncompressed multi-frame ultrasound, with new UIDs."""
    path = get_testdata_file("US1_UNCR.dcm")
    assert path is not None, "pydicom-data's US1_UNCR.dcm is needed"
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return [ds]


def load(orthanc: Orthanc, kind: str, datasets: list[pydicom.Dataset], n: int = 1) -> Study:
    """Give the study a fake patient and accession number (``kind`` + ``n``) and store it in Orthanc."""
    _label(datasets, kind, n)
    ids = orthanc.upload_study(dataset_bytes(ds) for ds in datasets)
    first = datasets[0]
    return Study(kind, str(first.StudyInstanceUID), first.AccessionNumber, first.PatientID, str(first.PatientName), ids)
