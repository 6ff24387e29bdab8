"""``pull_study`` / ``medsec pull`` against a real Orthanc: over DICOMweb (QIDO-RS + WADO-RS), C-GET and C-MOVE
the container holds what Orthanc holds, byte for byte, and nothing else is written; a PACS that is down, refuses
the association, dies mid-transfer or holds a corrupt instance gives one line and no container."""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import pytest

from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main as cli_main
from medsec_nb.container._reader import open_container
from medsec_nb.container.header import inspect_study
from medsec_nb.keys.identity import save_identity
from medsec_nb.pacs.dicomweb import DicomWeb, multipart_parts
from medsec_nb.pacs.dimse import Dimse
from medsec_nb.pacs.peer import PacsError, StudyQuery
from medsec_nb.pacs.pull import pull_study

from .orthanc import Modality, Orthanc, Study, ct_study, free_port, load

PADDING = 0xFFFCFFFC


def _contents(path: Path, identity) -> dict[str, bytes]:
    """The instances of a container, decrypted in memory, by SOP Instance UID."""
    out = {}
    with open_container(path, identity=identity) as box:
        for i in range(box.header.body.instance_count):
            data = box.file_bytes(i)
            out[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return out


def _dataset_part(data: bytes) -> bytes:
    """A Part 10 file's data set (after the File Meta group), without Data Set Trailing Padding (FFFC,FFFC),
    which DIMSE does not carry (Orthanc drops it when it sends; PS3.5 7.7 allows that)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    end = ds.get_item(PADDING).value_tell - 12 if PADDING in ds else len(data)  # explicit VR OB header
    return data[meta_end:end]


def _files_under(*folders: Path) -> set[str]:
    return {os.path.join(d, f) for folder in folders for d, _, fs in os.walk(folder) for f in fs}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A fresh TMPDIR and working directory: after a pull both must hold nothing but the container."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR again
    monkeypatch.chdir(cwd)
    return tmp, cwd


@pytest.fixture
def known_to_orthanc(orthanc):
    """Our AE title MEDSEC, known to the shared Orthanc at a free port (where C-MOVE sends)."""
    port = free_port()
    orthanc.set_modality("medsec", Modality("MEDSEC", port))
    return port


def _query(study: Study, by: str) -> StudyQuery:
    return {
        "uid": StudyQuery(study_uid=study.study_uid),
        "accession": StudyQuery(accession=study.accession),
        "patient": StudyQuery(patient_id=study.patient_id),
    }[by]


def _pull_records(log: Path) -> list[dict]:
    return [r for r in AuditLog(log).records() if r["action"] == "pull"]


@pytest.mark.parametrize(("kind", "by"), [("ct", "accession"), ("mr", "uid"), ("us", "patient")])
def test_dicomweb_pull_holds_exactly_what_orthanc_holds(orthanc, pacs_studies, scratch, identities, kind, by):
    study = pacs_studies[kind]
    tmp, cwd = scratch
    log = cwd.parent / "audit.jsonl"
    dest = pull_study(
        DicomWeb(orthanc.dicomweb_url),
        _query(study, by),
        "study.msec",
        [identities.x25519.public],
        purpose="TREAT",
        log=AuditLog(log),
        progress=False,
    )
    assert _contents(dest, identities.x25519) == orthanc.instance_files(study.study_uid)  # byte for byte
    assert _files_under(tmp) == set() and _files_under(cwd) == {str(cwd / "study.msec")}
    (rec,) = _pull_records(log)
    assert rec["outcome"] == "success" and rec["event"] == "110107" and rec["why"]["purpose"] == "TREAT"
    assert rec["study"]["study_uid"] == study.study_uid and rec["study"]["instances"] == len(study.instance_ids)
    assert rec["detail"] == {"file": "study.msec", "peer": f"DICOMweb {orthanc.dicomweb_url}", "protocol": "dicomweb"}


@pytest.mark.parametrize("move", [False, True], ids=["c-get", "c-move"])
@pytest.mark.parametrize(("kind", "by"), [("ct", "accession"), ("us", "patient")])
def test_dimse_pull_holds_the_data_sets_orthanc_sends(
    orthanc, pacs_studies, known_to_orthanc, scratch, identities, kind, by, move
):
    study = pacs_studies[kind]
    tmp, cwd = scratch
    peer = Dimse(
        "127.0.0.1", orthanc.dicom_port, "ORTHANC", "MEDSEC", move_to=("127.0.0.1", known_to_orthanc) if move else None
    )
    dest = pull_study(peer, _query(study, by), "study.msec", [identities.x25519.public], progress=False)
    held = orthanc.instance_files(study.study_uid)
    got = _contents(dest, identities.x25519)
    assert set(got) == set(held)
    for sop, data in got.items():
        assert _dataset_part(data) == _dataset_part(held[sop])
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert _files_under(tmp) == set() and _files_under(cwd) == {str(cwd / "study.msec")}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(["pull", *args, "--purpose", "TREAT", "-q"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def recipient_pub(tmp_path_factory, identities) -> str:
    return str(save_identity(identities.x25519, tmp_path_factory.mktemp("keys") / "site", None)[1])


def test_cli_pull_over_dicomweb(orthanc, pacs_studies, scratch, identities, recipient_pub, capsys):
    study = pacs_studies["mr"]
    code, out, err = _cli(
        capsys, "--dicomweb", orthanc.dicomweb_url, "--accession", study.accession, "-o", "mr.msec", "-r", recipient_pub
    )
    assert (code, err) == (0, "")
    assert out == f"wrote mr.msec: study pulled from DICOMweb {orthanc.dicomweb_url}, 1 recipient(s)\n"
    assert _contents(scratch[1] / "mr.msec", identities.x25519) == orthanc.instance_files(study.study_uid)


def _one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 1 and err.count("\n") == 1 and err.startswith("medsec: error: "), err
    for part in parts:
        assert part in err, err


def test_pacs_down(scratch, recipient_pub, capsys):
    port = free_port()
    code, _, err = _cli(
        capsys, "--dicomweb", f"http://127.0.0.1:{port}/dicom-web", "--study-uid", "1.2.3", "-o", "s.msec", "-r",
        recipient_pub,
    )  # fmt: skip
    _one_line_error(code, err, f"DICOMweb http://127.0.0.1:{port}/dicom-web", "connection refused")
    code, _, err = _cli(
        capsys, "--dimse", f"PACS@127.0.0.1:{port}", "--study-uid", "1.2.3", "-o", "s.msec", "-r", recipient_pub
    )
    _one_line_error(code, err, f"DICOM PACS@127.0.0.1:{port}", "no association")
    assert _files_under(*scratch) == set()


def test_wrong_called_ae_title_is_rejected(orthanc, pacs_studies, known_to_orthanc, scratch, recipient_pub, capsys):
    address = f"NOTORTHANC@127.0.0.1:{orthanc.dicom_port}"
    code, _, err = _cli(
        capsys, "--dimse", address, "--accession", pacs_studies["ct"].accession, "-o", "s.msec", "-r", recipient_pub
    )
    _one_line_error(code, err, f"DICOM {address}", "association rejected")
    assert _files_under(*scratch) == set()


def test_study_not_found_and_ambiguous_query(orthanc, pacs_studies, known_to_orthanc, scratch, recipient_pub, capsys):
    for peer in (["--dicomweb", orthanc.dicomweb_url], ["--dimse", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"]):
        code, _, err = _cli(capsys, *peer, "--accession", "NO-SUCH-ACC", "-o", "s.msec", "-r", recipient_pub)
        _one_line_error(code, err, "no study matches the accession number given")
        assert "NO-SUCH-ACC" not in err
    assert _files_under(*scratch) == set()


def test_a_second_study_of_the_patient_makes_a_patient_query_ambiguous(make_orthanc, scratch, identities):
    pacs = make_orthanc()
    first = load(pacs, "CT", ct_study(2, rows=16, columns=16))
    second = load(pacs, "CT", ct_study(2, rows=16, columns=16))  # the same fake patient, another study
    with pytest.raises(PacsError) as exc:
        pull_study(DicomWeb(pacs.dicomweb_url), StudyQuery(patient_id=first.patient_id), "s.msec", [identities.x25519])
    assert "2 studies match the patient ID given" in str(exc.value)
    assert first.study_uid in str(exc.value) and second.study_uid in str(exc.value)
    assert _files_under(*scratch) == set()


def _missing_named(message: str, study: Study, orthanc: Orthanc) -> None:
    """The error says how many instances are missing and names some of them (UIDs of the study's)."""
    sops = set(orthanc.instance_files(study.study_uid))
    assert f"of {len(sops)} instances missing: " in message
    named = message.split("instances missing: ")[1].split(";")[0].split(" and ")[0].split(", ")
    assert named and set(named) <= sops


@pytest.mark.parametrize("protocol", ["dicomweb", "c-get"])
def test_a_corrupt_instance_in_the_pacs(make_orthanc, scratch, identities, protocol):
    pacs = make_orthanc(modalities={"medsec": Modality("MEDSEC", free_port())})
    study = load(pacs, "CT", ct_study(6, rows=64, columns=64))
    stored = pacs.storage_path(study.instance_ids[3])
    stored.write_bytes(stored.read_bytes()[:-3000])  # a damaged file on the PACS's disk
    log = scratch[1].parent / "audit.jsonl"
    peer = DicomWeb(pacs.dicomweb_url) if protocol == "dicomweb" else Dimse("127.0.0.1", pacs.dicom_port, "ORTHANC")
    with pytest.raises(PacsError) as exc:
        pull_study(
            peer,
            StudyQuery(study_uid=study.study_uid),
            "s.msec",
            [identities.x25519],
            purpose="TREAT",
            log=AuditLog(log),
            progress=False,
        )
    message = str(exc.value)
    assert message.startswith(f"{peer}: study {study.study_uid}: ") and "\n" not in message
    assert "nothing was written to s.msec (a pull is cheap to retry)" in message
    _missing_named(message, study, pacs)
    assert _files_under(*scratch) == set()
    (rec,) = _pull_records(log)
    assert rec["outcome"] == "failure" and rec["study"]["study_uid"] == study.study_uid


def _kill_when_writing(pacs: Orthanc, folder: Path, threshold: int = 4 << 20) -> threading.Thread:
    """Kill Orthanc once the container being written (``.*.part``) in ``folder`` passes ``threshold`` bytes."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for part in folder.glob(".*.part"):
                try:
                    if part.stat().st_size > threshold:
                        pacs.kill()
                        return
                except FileNotFoundError:
                    pass
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["dicomweb", "c-get", "c-move"])
def test_the_pacs_dies_mid_transfer(make_orthanc, scratch, identities, protocol):
    port = free_port()
    pacs = make_orthanc(modalities={"medsec": Modality("MEDSEC", port)})
    study = load(pacs, "CT", ct_study(80, rows=512, columns=512))  # 40 MB
    peer = {
        "dicomweb": DicomWeb(pacs.dicomweb_url),
        "c-get": Dimse("127.0.0.1", pacs.dicom_port, "ORTHANC"),
        "c-move": Dimse("127.0.0.1", pacs.dicom_port, "ORTHANC", move_to=("127.0.0.1", port)),
    }[protocol]
    found = peer.find(StudyQuery(study_uid=study.study_uid))
    assert found.count == 80
    watcher = _kill_when_writing(pacs, scratch[1])
    with pytest.raises(PacsError) as exc:
        pull_study(peer, StudyQuery(study_uid=study.study_uid), "s.msec", [identities.x25519], progress=False)
    watcher.join()
    message = str(exc.value)
    assert message.startswith(f"{peer}: study {study.study_uid}: ") and "\n" not in message, message
    assert "connection dropped" in message or "broke off" in message, message
    missing = int(message.split(" of 80 instances missing")[0].rsplit("; ", 1)[1])
    assert 0 < missing < 80 and "instances missing (the PACS cannot list which now)" in message
    assert _files_under(*scratch) == set()


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_multipart_parts_whatever_the_chunks(size):
    bodies = [b"\x00" * 300, b"--not-the-boundary\r\n" * 9, b"DICM" + bytes(range(256))]
    message = b"preamble\r\n" + b"".join(
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + body + b"\r\n" for body in bodies
    )
    closed = message + b"--XyZ--\r\n"
    content_type = 'multipart/related; type="application/dicom"; boundary="XyZ"'

    def chunks(data: bytes):
        return iter([data[i : i + size] for i in range(0, len(data), size)])

    assert list(multipart_parts(content_type, chunks(closed))) == bodies
    with pytest.raises(ConnectionAbortedError):  # cut before the closing boundary: the last part is not trusted
        list(multipart_parts(content_type, chunks(message + b"--XyZ\r\nContent-Type: x\r\n\r\nDI")))
    with pytest.raises(ValueError):
        list(multipart_parts("application/dicom", chunks(closed)))


def test_cli_pull_to_the_key_service_and_signed(orthanc, pacs_studies, scratch, identities, recipient_pub, capsys):
    """``--to-keyservice``: the service's site key is a recipient (as for ``medsec encrypt``); ``--sign``: signed."""
    base = Path(tempfile.mkdtemp(prefix="medsec-pull-ks-", dir="/tmp"))  # a short path for the socket
    site_key = save_identity(identities.p256, base / "site", None)[0]
    signer = save_identity(identities.signer, base / "producer", None)[0]
    (base / "policy.csv").write_text("p, root, *, decrypt, HRESCH, *, allow\n")
    sock = base / "ks.sock"
    argv = ["keyservice", "--socket", str(sock), "-i", str(site_key), "--policy", str(base / "policy.csv")]
    proc = multiprocessing.get_context("fork").Process(
        target=lambda: os._exit(cli_main([*argv, "--log", str(base / "ks.jsonl")]))
    )
    proc.start()
    try:
        for _ in range(300):
            if sock.exists():
                break
            time.sleep(0.05)
        study = pacs_studies["us"]
        code, out, err = _cli(
            capsys, "--dicomweb", orthanc.dicomweb_url, "--study-uid", study.study_uid, "-o", "us.msec",
            "-r", recipient_pub, "--to-keyservice", str(sock), "--sign", str(signer),
        )  # fmt: skip
        assert (code, err) == (0, ""), err
        assert "2 recipient(s)" in out
        info = inspect_study(scratch[1] / "us.msec")
        assert {r.split()[1] for r in info.recipients} == {identities.x25519.key_id, identities.p256.key_id}
        assert info.signer == identities.signer.key_id
        assert _contents(scratch[1] / "us.msec", identities.p256) == orthanc.instance_files(study.study_uid)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_the_c_move_scp_refuses_anyone_but_the_pacs(make_orthanc, scratch, identities):
    from pynetdicom import AE

    port = free_port()
    pacs = make_orthanc(modalities={"medsec": Modality("MEDSEC", port)})
    study = load(pacs, "CT", ct_study(60, rows=512, columns=512))
    answers: list[tuple[bool, bool]] = []

    def intrude() -> None:  # as soon as the pull's storage SCP listens, a stranger asks to deliver to it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.002)
        ae = AE("STRANGER")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEC")
        answers.append((assoc.is_established, assoc.is_rejected))
        if assoc.is_established:
            assoc.release()

    intruder = threading.Thread(target=intrude)
    intruder.start()
    peer = Dimse("127.0.0.1", pacs.dicom_port, "ORTHANC", move_to=("127.0.0.1", port))
    dest = pull_study(peer, StudyQuery(study_uid=study.study_uid), "s.msec", [identities.x25519], progress=False)
    intruder.join()
    assert answers == [(False, True)]
    assert inspect_study(dest).instance_count == 60
