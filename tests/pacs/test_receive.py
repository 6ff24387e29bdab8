"""``receive`` / ``medsec receive``: a real C-STORE SCP (pynetdicom) fed by a pynetdicom SCU and by a real
Orthanc (C-MOVE to the receiver's AE title); containers hold exactly what was sent, nothing else is written."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from medsec_nb.audit import AuditLog
from medsec_nb.container._reader import open_container
from medsec_nb.container.sources import dataset_bytes
from medsec_nb.core.errors import MedsecError
from medsec_nb.keys.identity import save_identity
from medsec_nb.pacs.receive import Receiver
from medsec_nb.testdata import synthesize_datasets

from .orthanc import Modality, free_port

CT = "1.2.840.10008.5.1.4.1.1.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PADDING = 0xFFFCFFFC


def _files_under(*folders: Path) -> set[str]:
    return {os.path.join(d, f) for folder in folders for d, _, fs in os.walk(folder) for f in fs}


def _dataset_part(data: bytes) -> bytes:
    """A Part 10 file's bytes after its File Meta group: the data set as sent over the network. Data Set
    Trailing Padding (FFFC,FFFC), which a sender may drop (PS3.5 7.7; Orthanc does), is left out."""
    ds = pydicom.dcmread(io.BytesIO(data))
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    end = len(data)
    if PADDING in ds:
        end = ds.get_item(PADDING).value_tell - 12  # explicit VR OB: tag, VR, reserved, length
    return data[meta_end:end]


def _contents(path: Path, identity) -> dict[str, bytes]:
    """The instances of a container, decrypted in memory, by SOP Instance UID."""
    out = {}
    with open_container(path, identity=identity) as box:
        for i in range(box.header.body.instance_count):
            data = box.file_bytes(i)
            out[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return out


def _send(port: int, datasets, calling: str = "MODALITY", contexts=(CT,)) -> list[int]:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)  # the data set goes as encoded
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEC")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_study_sent_over_c_store_becomes_one_container_with_the_bytes_sent(receiver, tmp_path, identities):
    datasets = synthesize_datasets(6, rows=32, columns=40)
    r = receiver()
    assert _send(r.port, datasets) == [0] * 6
    got = _wait_for(lambda: r.written)
    assert len(got) == 1 and got[0].instances == 6 and got[0].callers == ("MODALITY",)
    assert _files_under(tmp_path / "incoming") == {str(got[0].path)}  # no plaintext, no temporary left
    stored = _contents(got[0].path, identities.x25519)
    assert {sop: _dataset_part(b) for sop, b in stored.items()} == {
        str(ds.SOPInstanceUID): _dataset_part(dataset_bytes(ds)) for ds in datasets
    }
    (rec,) = [r for r in AuditLog(tmp_path / "audit.jsonl").records() if r["action"] == "receive"]
    assert rec["outcome"] == "success" and rec["event"] == "110107"
    assert rec["study"]["study_uid"] == str(datasets[0].StudyInstanceUID) and rec["study"]["instances"] == 6
    assert rec["detail"] == {"file": got[0].path.name, "calling_ae": ["MODALITY"]}


def test_an_unknown_calling_ae_title_is_rejected_and_recorded(receiver, tmp_path):
    r = receiver()
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(CT)
    assoc = ae.associate("127.0.0.1", r.port, ae_title="MEDSEC")
    assert assoc.is_rejected
    rec = _wait_for(lambda: [x for x in AuditLog(tmp_path / "audit.jsonl").records() if x["outcome"] == "denied"])
    assert rec[0]["action"] == "receive" and rec[0]["detail"]["calling_ae"] == "STRANGER"
    assert r.written == [] and list((tmp_path / "incoming").iterdir()) == []


def test_non_image_sop_classes_are_refused_unless_allowed(receiver):
    plan = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(RT_PLAN)
    ae.add_requested_context(CT)
    strict = receiver()
    assoc = ae.associate("127.0.0.1", strict.port, ae_title="MEDSEC")
    assert assoc.is_established and [cx.abstract_syntax for cx in assoc.accepted_contexts] == [CT]
    with pytest.raises(ValueError):
        assoc.send_c_store(plan)
    assoc.release()
    lenient = receiver(allow_non_image=True)
    assert _send(lenient.port, [plan], contexts=(RT_PLAN,)) == [0]
    assert _wait_for(lambda: lenient.written)[0].instances == 1


def test_a_study_over_two_associations_two_containers_or_one_with_a_quiet_period(receiver):
    datasets = synthesize_datasets(4, rows=16, columns=16)
    each = receiver()
    _send(each.port, datasets[:2])
    _send(each.port, datasets[2:])
    got = _wait_for(lambda: each.written if len(each.written) == 2 else None)
    assert [x.instances for x in got] == [2, 2] and got[0].path != got[1].path
    gathered = receiver(quiet=4)
    _send(gathered.port, datasets[:2])
    _send(gathered.port, datasets[2:])
    assert [x.instances for x in _wait_for(lambda: gathered.written)] == [4]


def test_a_corrupt_instance_is_refused_the_rest_kept(receiver, identities):
    good = synthesize_datasets(2, rows=16, columns=16)
    bad = synthesize_datasets(1, rows=16, columns=16)[0]
    bad.StudyInstanceUID = good[0].StudyInstanceUID
    del bad.PixelData  # image attributes, no pixels: a truncated instance
    r = receiver()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT)
    assoc = ae.associate("127.0.0.1", r.port, ae_title="MEDSEC")
    statuses = [int(assoc.send_c_store(good[0]).Status), int(assoc.send_c_store(bad).Status)]
    statuses.append(int(assoc.send_c_store(good[1]).Status))
    assoc.release()
    assert statuses[0] == 0 and statuses[1] != 0 and statuses[2] == 0
    assert set(_contents(_wait_for(lambda: r.written)[0].path, identities.x25519)) == {
        str(ds.SOPInstanceUID) for ds in good
    }


def test_configuration_errors_are_one_line(tmp_path, identities):
    with pytest.raises(MedsecError, match="no such folder"):
        Receiver(tmp_path / "missing", [identities.x25519], allowed_callers=["X"])
    with pytest.raises(MedsecError, match="--allow-caller"):
        Receiver(tmp_path, [identities.x25519])
    with pytest.raises(MedsecError, match="recipient"):
        Receiver(tmp_path, [], allowed_callers=["X"])


# ------------------------------------------------------------------ the command, with a real Orthanc


def _start_cli(tmp_path: Path, pub: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir(exist_ok=True)
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    (tmp_path / "incoming").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch), "MEDSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medsec_nb.cli", "receive", "-o", str(tmp_path / "incoming"), "-r", str(pub)]
        + ["--port", str(port), "--purpose", "TREAT", *extra],
        cwd=work,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    proc.log = lines  # type: ignore[attr-defined]
    _wait_for(lambda: any("listening as" in line for line in lines) or proc.poll() is not None)
    assert proc.poll() is None, "".join(lines)
    return proc


@pytest.mark.slow
def test_orthanc_c_move_to_medsec_receive_no_plaintext_anywhere(orthanc, pacs_studies, tmp_path, identities):
    pub = save_identity(identities.x25519, tmp_path / "site", None)[1]
    port = free_port()
    orthanc.set_modality("medsec", Modality("MEDSEC", port))
    proc = _start_cli(tmp_path, pub, port, "--allow-caller", orthanc.aet)
    ct = pacs_studies["ct"]
    try:
        ae = AE(ae_title="MEDSEC")  # a C-MOVE to Orthanc naming the receiver's AE title as the destination
        ae.add_requested_context(STUDY_ROOT_MOVE)
        assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
        query = pydicom.Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ct.study_uid
        statuses = [int(status.Status) for status, _ in assoc.send_c_move(query, "MEDSEC", STUDY_ROOT_MOVE) if status]
        assoc.release()
        assert statuses[-1] == 0, statuses
        found = _wait_for(lambda: list((tmp_path / "incoming").glob("*.msec")))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(proc.log)  # type: ignore[attr-defined]
    assert "received 40 instance(s) into 1 container(s)" in out
    assert _files_under(tmp_path / "tmpdir", tmp_path / "cwd") == set()
    assert _files_under(tmp_path / "incoming") == {str(found[0])}
    held = orthanc.instance_files(ct.study_uid)
    stored = _contents(found[0], identities.x25519)
    assert {s: _dataset_part(b) for s, b in stored.items()} == {s: _dataset_part(b) for s, b in held.items()}
    log = "".join(proc.log)  # type: ignore[attr-defined]
    assert ct.study_uid not in log and ct.patient_id not in log and "Traceback" not in log
    assert re.search(r"wrote \S+\.msec: 40 instance\(s\) from ORTHANC", log)


@pytest.mark.slow
def test_sigterm_mid_association_loses_no_accepted_instance(tmp_path, identities):
    pub = save_identity(identities.x25519, tmp_path / "site", None)[1]
    port = free_port()
    proc = _start_cli(tmp_path, pub, port, "--allow-caller", "MODALITY")
    datasets = synthesize_datasets(200, rows=64, columns=64)
    acked: list[str] = []
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEC")

    def send() -> None:
        for ds in datasets:
            if not assoc.is_established:
                return
            status = assoc.send_c_store(ds)
            if status and int(status.Status) == 0:
                acked.append(str(ds.SOPInstanceUID))

    sender = threading.Thread(target=send)
    sender.start()
    _wait_for(lambda: len(acked) >= 20)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    sender.join(30)
    assert proc.returncode == 0, "".join(proc.log)  # type: ignore[attr-defined]
    assert len(acked) < len(datasets), "the association ended before SIGTERM: nothing was tested"
    (container,) = list((tmp_path / "incoming").glob("*.msec"))
    stored = set(_contents(container, identities.x25519))
    assert set(acked) <= stored
    assert _files_under(tmp_path / "tmpdir", tmp_path / "cwd") == set()
    recs = [r for r in AuditLog(tmp_path / "audit.jsonl").records() if r["action"] == "receive"]
    assert [r["study"]["instances"] for r in recs] == [len(stored)]
    assert json.dumps(recs).count(str(datasets[0].SOPInstanceUID)) == 0


def test_command_errors_are_one_line(tmp_path, identities):
    pub = save_identity(identities.x25519, tmp_path / "site", None)[1]
    (tmp_path / "incoming").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {
            "no callers": (["-o", str(tmp_path / "incoming")], "or accept any (--any-caller)"),
            "no folder": (["-o", str(tmp_path / "nope"), "--any-caller"], "nope: no such folder"),
            "port in use": (
                ["-o", str(tmp_path / "incoming"), "--any-caller", "--port", str(port)],
                f"127.0.0.1:{port}: cannot listen",
            ),
        }
        for argv, message in cases.values():
            r = subprocess.run(
                [sys.executable, "-m", "medsec_nb.cli", "receive", "-r", str(pub), "--purpose", "TREAT", *argv],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 1 and message in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_container_that_cannot_be_written_is_refused_recorded_and_nothing_hangs(receiver, tmp_path):
    r = receiver()
    (tmp_path / "incoming").rmdir()  # the writer cannot create its file
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", r.port, ae_title="MEDSEC")
    statuses = []
    for ds in synthesize_datasets(12, rows=16, columns=16):
        statuses.append(int(assoc.send_c_store(ds).Status))
        time.sleep(0.1)  # the writer fails at once; give it a moment on a busy machine
    assoc.release()
    assert 0xA700 in statuses  # once the writer failed, the sender is told: out of resources
    rec = _wait_for(lambda: [x for x in AuditLog(tmp_path / "audit.jsonl").records() if x["outcome"] == "failure"])
    assert rec[0]["action"] == "receive" and "cannot write container" in rec[0]["detail"]["reason"]
    assert rec[0]["study"]["instances"] == statuses.count(0)
    assert r.written == []


@pytest.mark.slow
def test_receive_to_the_key_service_s_site_keys(tmp_path, identities):
    """``--to-keyservice``: the service's site key is a recipient beside ``-r`` (as for ``medsec encrypt``);
    the site's private key opens what arrived, and the receiver never held it."""
    from medsec_nb.cli.main import main as cli_main

    base = Path(tempfile.mkdtemp(prefix="medsec-recv-ks-", dir="/tmp"))  # a short path for the socket
    site_key = save_identity(identities.p256, base / "site", None)[0]
    (base / "policy.csv").write_text("p, root, *, decrypt, HRESCH, *, allow\n")
    sock = base / "ks.sock"
    argv = ["keyservice", "--socket", str(sock), "-i", str(site_key), "--policy", str(base / "policy.csv")]
    service = multiprocessing.get_context("fork").Process(
        target=lambda: os._exit(cli_main([*argv, "--log", str(base / "ks.jsonl")]))
    )
    service.start()
    try:
        _wait_for(sock.exists)
        pub = save_identity(identities.x25519, tmp_path / "analyst", None)[1]
        port = free_port()
        proc = _start_cli(tmp_path, pub, port, "--allow-caller", "MODALITY", "--to-keyservice", str(sock))
        datasets = synthesize_datasets(4, rows=16, columns=16)
        try:
            assert _send(port, datasets) == [0] * 4
            found = _wait_for(lambda: list((tmp_path / "incoming").glob("*.msec")))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(proc.log)  # type: ignore[attr-defined]
        sent = {str(ds.SOPInstanceUID): _dataset_part(dataset_bytes(ds)) for ds in datasets}
        for identity in (identities.p256, identities.x25519):  # the site key and the -r key both open it
            assert {s: _dataset_part(b) for s, b in _contents(found[0], identity).items()} == sent
        assert _files_under(tmp_path / "tmpdir", tmp_path / "cwd") == set()
    finally:
        os.kill(service.pid, signal.SIGTERM)
        service.join(30)
        shutil.rmtree(base, ignore_errors=True)
