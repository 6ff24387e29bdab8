"""``pull`` and ``push`` against a hostile or misconfigured PACS: each test replays an attack of the security
review (issue 17 hardening) on a tiny DICOMweb server run by the test (or a real Orthanc with authentication, or a
tiny DIMSE peer) and checks it ends in one line, no container and no secret anywhere."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main as cli_main
from medsec_nb.container.sources import dataset_bytes
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.core.errors import MedsecError
from medsec_nb.keys.identity import save_identity
from medsec_nb.pacs.dicomweb import DicomWeb, multipart_parts
from medsec_nb.pacs.dimse import Dimse
from medsec_nb.pacs.peer import PacsError, StudyQuery, public_url
from medsec_nb.pacs.pull import pull_study
from medsec_nb.pacs.push import push
from medsec_nb.testdata import synthesize_datasets

from .orthanc import Orthanc, ct_study, free_port, load

PASSWORD = "S3cretPW-do-not-show"
TOKEN = "tok-9f8e7d-do-not-show"
BOUNDARY = "BOUNDARYxyz"


@dataclass
class Hostile:
    """What the tiny DICOMweb server answers: ``datasets`` as the study (QIDO-RS lists ``study_uid`` with
    ``count`` instances whatever the query), and how it misbehaves."""

    datasets: list[pydicom.Dataset]
    study_uid: str = ""
    count: int | None = None
    endless: int = 0  # MiB of one part that never ends
    declared: int | None = None  # a Content-Length header on each part
    drip: float = 0.0  # seconds between parts
    parts: int | None = None  # send only this many parts, then close properly
    listed: list[str] = field(default_factory=list)  # what the instance-level QIDO-RS answers
    token: str | None = None  # require this bearer token
    silent: bool = False  # accept, read, never answer

    def __post_init__(self) -> None:
        self.study_uid = self.study_uid or str(self.datasets[0].StudyInstanceUID)


def _handler(h: Hostile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/dicom+json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # STOW-RS
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if h.silent:
                time.sleep(30)
            self._send(200, b"{}")

        def do_GET(self) -> None:
            if h.token is not None and self.headers.get("Authorization") != f"Bearer {h.token}":
                return self._send(401, b"")
            path = urllib.parse.unquote(self.path.split("?")[0])
            if path == "/dicom-web/studies":
                count = len(h.datasets) if h.count is None else h.count
                body = [{"0020000D": {"vr": "UI", "Value": [h.study_uid]}, "00201208": {"vr": "IS", "Value": [count]}}]
                return self._send(200, json.dumps(body).encode())
            if path.endswith("/instances"):
                body = [{"00080018": {"vr": "UI", "Value": [uid]}} for uid in h.listed]
                return self._send(200, json.dumps(body).encode())
            if path != f"/dicom-web/studies/{h.study_uid}":
                return self._send(404, b"")
            self.send_response(200)
            self.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
            self.send_header("Connection", "close")
            self.end_headers()
            head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
            try:
                if h.endless:
                    self.wfile.write(f"{head}\r\n".encode())
                    for _ in range(h.endless):
                        self.wfile.write(b"\0" * (1 << 20))
                    return
                for data in [dataset_bytes(ds) for ds in h.datasets][: h.parts]:
                    length = f"Content-Length: {h.declared if h.declared is not None else len(data)}\r\n"
                    self.wfile.write(f"{head}{length}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    time.sleep(h.drip)
                self.wfile.write(f"--{BOUNDARY}--\r\n".encode())
            except OSError:
                pass  # the client gave up

    return Handler


@pytest.fixture
def hostile() -> Iterator[Callable[..., str]]:
    """``hostile(datasets, **behaviour)`` starts a tiny DICOMweb server; its base URL (``.../dicom-web``)."""
    servers: list[ThreadingHTTPServer] = []

    def start(datasets: list[pydicom.Dataset], **behaviour: Any) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Hostile(datasets, **behaviour)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/dicom-web"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _study(n: int = 3, accession: str = "ACC-H1", patient_id: str = "PID-H1") -> list[pydicom.Dataset]:
    datasets = synthesize_datasets(n, rows=16, columns=16)
    for ds in datasets:
        ds.AccessionNumber, ds.PatientID = accession, patient_id
    return datasets


@pytest.fixture
def site(tmp_path, identities, monkeypatch) -> dict[str, Path]:
    """A working folder, the recipient's public key and the audit log (``MEDSEC_AUDIT_LOG``)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(log))
    pub = save_identity(identities.x25519, tmp_path / "site", None)[1]
    return {"work": work, "log": log, "pub": Path(pub)}


def _pull(capsys, site, *args: str) -> tuple[int, str, str]:
    code = cli_main(["pull", *args, "-o", "s.msec", "-r", str(site["pub"]), "--purpose", "TREAT", "-q"])
    out, err = capsys.readouterr()
    return code, out, err


def _records(site) -> list[dict]:
    return [r for r in AuditLog(site["log"]).records() if r["action"] == "pull"] if site["log"].exists() else []


def _failed(code: int, err: str, site, *parts: str) -> None:
    """One error line holding ``parts``, exit 1, and nothing at all in the working folder."""
    assert code == 1 and err.count("\n") == 1 and err.startswith("medsec: error: "), err
    for part in parts:
        assert part in err, err
    assert list(site["work"].iterdir()) == []


# -- 1: credentials never shown or recorded ------------------------------------------------------------------


def test_credentials_in_the_url_are_not_shown_or_recorded(hostile, site, capsys):
    url = hostile(_study())
    secret_url = url.replace("http://", f"http://steward:{PASSWORD}@")
    code, out, err = _pull(capsys, site, "--dicomweb", secret_url, "--accession", "ACC-H1")
    assert (code, err) == (0, ""), err
    assert out == f"wrote s.msec: study pulled from DICOMweb {url}, 1 recipient(s)\n"
    (rec,) = _records(site)
    assert rec["outcome"] == "success" and rec["detail"]["peer"] == f"DICOMweb {url}"
    assert PASSWORD not in site["log"].read_text()
    # a failure names the server without them too (nothing listens at this port any more)
    (site["work"] / "s.msec").unlink()
    down = f"http://steward:{PASSWORD}@127.0.0.1:{free_port()}/dicom-web?token={TOKEN}"
    code, out, err = _pull(capsys, site, "--dicomweb", down, "--accession", "ACC-H1")
    _failed(code, err, site, "connection refused")
    assert PASSWORD not in out + err and TOKEN not in out + err and "steward" not in err


def test_public_url_drops_user_password_query_and_fragment():
    assert public_url(f"https://u:{PASSWORD}@pacs.example:8443/dicom-web/?token={TOKEN}#x") == (
        "https://pacs.example:8443/dicom-web"
    )
    assert public_url("http://[::1]:8042/dicom-web") == "http://[::1]:8042/dicom-web"


def test_bearer_token_from_a_file(hostile, site, tmp_path, capsys):
    url = hostile(_study(), token=TOKEN)
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1")
    _failed(code, err, site, "HTTP 401", "check the user and password or token")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, out, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1", "--token-file", str(token_file))
    assert (code, err) == (0, "") and (site["work"] / "s.msec").exists()
    assert TOKEN not in out + site["log"].read_text()


def test_a_password_only_from_a_file(site, capsys):
    with pytest.raises(SystemExit):  # there is no --password option
        cli_main(["pull", "--dicomweb", "http://x/y", "--password", PASSWORD, "--study-uid", "1.2", "-o", "s.msec"])
    assert "unrecognized arguments: --password" in capsys.readouterr().err
    code, _, err = _pull(capsys, site, "--dicomweb", "http://127.0.0.1:1/x", "--study-uid", "1.2", "--user", "u")
    _failed(code, err, site, "--user needs --password-file")


@pytest.mark.slow  # starts an Orthanc
def test_http_basic_against_orthanc_and_a_wrong_password_is_not_shown(tmp_path, site, identities, capsys):
    pacs = Orthanc(tmp_path / "orthanc", users={"steward": PASSWORD}).start()
    try:
        study = load(pacs, "CT", ct_study(3))
        wrong, right = tmp_path / "wrong.pw", tmp_path / "right.pw"
        wrong.write_text("Wr0ng-guess-do-not-show\n")
        right.write_text(PASSWORD + "\n")
        base = ["--dicomweb", pacs.dicomweb_url, "--study-uid", study.study_uid, "--user", "steward"]
        code, out, err = _pull(capsys, site, *base)  # no password file
        _failed(code, err, site, "--password-file")
        code, out, err = _pull(capsys, site, *base, "--password-file", str(wrong))
        _failed(code, err, site, "HTTP 401")
        assert "Wr0ng-guess" not in out + err
        code, out, err = _pull(capsys, site, *base, "--password-file", str(right))
        assert (code, err) == (0, "") and (site["work"] / "s.msec").exists()
        assert PASSWORD not in out + err + site["log"].read_text()
    finally:
        pacs.stop()


# -- 2: the PACS's matching is not trusted ---------------------------------------------------------------------


def test_a_study_uid_query_answered_with_another_study(hostile, site, capsys):
    url = hostile(_study())  # lists its own study whatever is asked
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--study-uid", "1.2.826.0.1.3680043.99.1")
    _failed(code, err, site, "no study matches study 1.2.826.0.1.3680043.99.1")
    assert _records(site) == []


@pytest.mark.parametrize("by", ["--accession", "--patient-id"])
def test_instances_of_another_accession_or_patient(hostile, site, capsys, by):
    url = hostile(_study(accession="ACC-OTHER", patient_id="PID-OTHER"))
    code, _, err = _pull(capsys, site, "--dicomweb", url, by, "ASKED-1")
    what = "accession number" if by == "--accession" else "patient ID"
    _failed(code, err, site, f"instance 1 does not match the {what} given", "nothing was written")
    assert "OTHER" not in err and "ASKED-1" not in err
    (rec,) = _records(site)
    assert rec["outcome"] == "failure" and rec["detail"]["received"] == 0
    assert "OTHER" not in json.dumps(rec) and "ASKED" not in json.dumps(rec)


# -- 3: peer text that is not a UID ----------------------------------------------------------------------------


def test_a_study_uid_that_is_not_a_uid(hostile, site, capsys):
    datasets = _study()
    for ds in datasets:
        ds.StudyInstanceUID = "MRN004711.DOE^JOHN"
    url = hostile(datasets)
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1")
    _failed(code, err, site, "not valid DICOM UIDs")
    assert "DOE" not in err and "MRN" not in err
    assert _records(site) == []


def test_missing_instance_uids_listed_by_the_peer_are_shown_only_if_they_are_uids(hostile, site, capsys):
    datasets = _study(4)
    listed = [str(ds.SOPInstanceUID) for ds in datasets] + ["\x1b]0;owned\x07", "1.2.3\x1b[2J"]
    url = hostile(datasets, parts=2, listed=listed)
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1")
    _failed(code, err, site, "2 of 4 instances missing", str(datasets[2].SOPInstanceUID))
    assert "\x1b" not in err and "\x07" not in err


def test_the_container_appears_only_after_its_record(hostile, tmp_path, identities):
    url = hostile(_study())
    work = tmp_path / "out"
    work.mkdir()
    (tmp_path / "log-is-a-folder").mkdir()  # the audit log cannot be appended to
    with pytest.raises(MedsecError, match="cannot open the audit log"):
        pull_study(
            DicomWeb(url),
            StudyQuery(accession="ACC-H1"),
            work / "s.msec",
            [identities.x25519.public],
            purpose="TREAT",
            log=AuditLog(tmp_path / "log-is-a-folder"),
            progress=False,
        )
    assert list(work.iterdir()) == []


# -- 4: malformed instances, malformed DIMSE answers -----------------------------------------------------------


def test_a_malformed_instance_is_a_recorded_failure(hostile, site, capsys):
    datasets = _study()
    datasets[1].Rows = None  # present, zero length
    url = hostile(datasets)
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1")
    _failed(code, err, site, "instance 2: malformed image attributes", "2 of 3 instances missing")
    assert "internal error" not in err
    (rec,) = _records(site)
    assert rec["outcome"] == "failure" and rec["detail"]["received"] == 1


@pytest.fixture
def bad_dimse() -> Iterator[int]:
    """A DIMSE peer whose study-level C-FIND lists SOP Classes in Study that are not UIDs (port)."""
    study_uid = pydicom.uid.generate_uid()

    def on_find(event: evt.Event) -> Iterator[tuple[int, pydicom.Dataset | None]]:
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        ds.NumberOfStudyRelatedInstances = "3"
        ds[0x00080062] = DataElement(0x00080062, "UI", ["CT^IMAGE", "\x1b[2Jx"], validation_mode=config.IGNORE)
        yield 0xFF00, ds

    ae = AE("HOSTILE")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    yield port
    server.shutdown()


def test_a_dimse_peer_listing_sop_classes_that_are_not_uids(bad_dimse, site, capsys):
    code, _, err = _pull(capsys, site, "--dimse", f"HOSTILE@127.0.0.1:{bad_dimse}", "--accession", "ACC-H1")
    _failed(code, err, site, "2 SOP Class UID(s) that are not valid DICOM UIDs")
    assert "\x1b" not in err and "internal error" not in err


# -- 5: a part that never ends, a part too large, a slow drip --------------------------------------------------


def test_multipart_reader_stops_at_the_limit_without_reading_on():
    read = 0

    def endless() -> Iterator[bytes]:
        nonlocal read
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        while True:
            read += 1 << 16
            yield b"\0" * (1 << 16)

    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    with pytest.raises(ValueError, match="larger than the limit of 1048576 bytes"):
        next(multipart_parts(ctype, endless(), max_part=1 << 20))
    assert read <= (1 << 20) + (64 << 10)  # the buffer never grew much past the limit


def test_a_part_that_never_ends(hostile, site, capsys):
    url = hostile(_study(), endless=64)
    t0 = time.monotonic()
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1", "--max-instance-mb", "4")
    _failed(code, err, site, "an instance larger than the limit of 4194304 bytes", "3 of 3 instances missing")
    assert time.monotonic() - t0 < 30
    assert _records(site)[0]["outcome"] == "failure"


def test_a_declared_part_length_over_the_limit_is_refused_before_it_arrives(hostile, site, capsys):
    url = hostile(_study(), declared=10**12)
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1")
    _failed(code, err, site, "an instance larger than the limit")


def test_a_slow_drip_meets_the_overall_deadline(hostile, site, capsys):
    url = hostile(_study(6), drip=0.6)
    t0 = time.monotonic()
    code, _, err = _pull(capsys, site, "--dicomweb", url, "--accession", "ACC-H1", "--max-time", "1")
    _failed(code, err, site, "not done within 1 s (--max-time)")
    assert time.monotonic() - t0 < 3.5


@pytest.fixture
def slow_dimse() -> Iterator[tuple[int, str]]:
    """A DIMSE peer that finds a 6-instance study and sends it by C-GET, 1 s an instance (port, study UID)."""
    datasets = _study(6)
    sop_class = str(datasets[0].SOPClassUID)

    def on_find(event: evt.Event) -> Iterator[tuple[int, pydicom.Dataset | None]]:
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = datasets[0].StudyInstanceUID
        ds.NumberOfStudyRelatedInstances = str(len(datasets))
        ds.SOPClassesInStudy = sop_class
        yield 0xFF00, ds

    def on_get(event: evt.Event) -> Iterator[Any]:
        yield len(datasets)
        for ds in datasets:
            time.sleep(1.0)
            yield 0xFF00, ds

    ae = AE("SLOW")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    port = free_port()
    handlers = [(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield port, str(datasets[0].StudyInstanceUID)
    server.shutdown()


def test_a_slow_dimse_peer_meets_the_overall_deadline(slow_dimse, tmp_path, identities):
    port, study_uid = slow_dimse
    t0 = time.monotonic()
    with pytest.raises(PacsError, match=r"not done within 1 s \(--max-time\)"):
        pull_study(
            Dimse("127.0.0.1", port, "SLOW", max_time=1),
            StudyQuery(study_uid=study_uid),
            tmp_path / "s.msec",
            [identities.x25519.public],
            purpose="TREAT",
            log=AuditLog(tmp_path / "audit.jsonl"),
            progress=False,
        )
    assert time.monotonic() - t0 < 4.5  # not the 6 s the peer takes
    assert list(tmp_path.glob("*.msec")) == [] and list(tmp_path.glob(".*")) == []


# -- push ------------------------------------------------------------------------------------------------------


@pytest.fixture
def encrypted(tmp_path, identities) -> Path:
    return encrypt_datasets(_study(2), tmp_path / "push.msec", [identities.x25519], progress=False)


def test_push_to_a_server_that_never_answers_is_one_line_and_quick(hostile, encrypted, identities, tmp_path):
    url = hostile(_study(), silent=True)
    t0 = time.monotonic()
    with pytest.raises(MedsecError) as err:
        push(
            encrypted, url, identity=identities.x25519, secret=b"research project secret, 32 b..", progress=False,
            timeout=1, audit_log=tmp_path / "audit.jsonl",
        )  # fmt: skip
    assert str(err.value) == f"{url}: no answer within 1 s; 0 of 2 instance(s) sent"
    assert time.monotonic() - t0 < 10  # no retries with back-off


def test_push_never_shows_credentials(encrypted, identities, tmp_path):
    url = f"http://steward:{PASSWORD}@127.0.0.1:{free_port()}/dicom-web?token={TOKEN}"
    with pytest.raises(MedsecError) as err:
        push(
            encrypted, url, identity=identities.x25519, secret=b"research project secret, 32 b..", progress=False,
            audit_log=tmp_path / "audit.jsonl",
        )  # fmt: skip
    assert PASSWORD not in str(err.value) and TOKEN not in str(err.value)
    assert PASSWORD not in (tmp_path / "audit.jsonl").read_text()
