"""``push`` / ``medsec push``: a de-identified export sent to a second, real Orthanc over STOW-RS and C-STORE;
nothing there can be found by the original patient's name, ID or UIDs; a leak sends nothing; a PACS that is
down is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse

import pytest

from medsec_nb.audit import AuditLog
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.core.errors import MedsecError
from medsec_nb.deid.export import LeakError
from medsec_nb.keys.identity import save_identity
from medsec_nb.pacs.push import Destination, push
from medsec_nb.testdata import synthesize_datasets

from .orthanc import free_port

SECRET = b"research project secret, 32 b.."


@pytest.fixture
def study(tmp_path, identities):
    """An encrypted 5-slice study of a fake patient (no plaintext file anywhere) and its original identifiers."""
    datasets = synthesize_datasets(5, rows=32, columns=32)
    for ds in datasets:
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Pushed^Patricia", "MEDSEC-PUSH-7", "ACCPUSH7"
    path = encrypt_datasets(datasets, tmp_path / "study.msec", [identities.x25519], progress=False)
    uids = {str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)}
    uids |= {str(ds.SOPInstanceUID) for ds in datasets}
    return path, datasets[0], uids


def _nothing_findable(pacs, original, uids) -> None:
    for key, value in (("PatientName", str(original.PatientName)), ("PatientID", str(original.PatientID))):
        assert pacs.post_json("/tools/find", {"Level": "Instance", "Query": {key: value}}) == []
        assert json.loads(pacs.rest("GET", f"/dicom-web/studies?{urllib.parse.urlencode({key: value})}") or b"[]") == []
    for uid in uids:
        assert json.loads(pacs.rest("POST", "/tools/lookup", uid.encode(), "text/plain")) == []
        assert pacs.post_json("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": uid}}) == []
    assert pacs.post_json("/tools/find", {"Level": "Study", "Query": {"AccessionNumber": "ACCPUSH7"}}) == []


@pytest.mark.slow  # starts its own Orthanc or the command
def test_push_over_stow_rs_arrives_de_identified(make_orthanc, study, identities, tmp_path):
    path, original, uids = study
    research = make_orthanc(aet="RESEARCH")
    log = tmp_path / "audit.jsonl"
    report = push(path, research.dicomweb_url, identity=identities.x25519, secret=SECRET, progress=False, audit_log=log)
    assert report.instances == 5 and report.leak_hits == 0
    assert len(research.get_json("/instances")) == 5
    (held,) = research.get_json("/studies?expand")
    assert held["PatientMainDicomTags"]["PatientID"] != original.PatientID
    _nothing_findable(research, original, uids)
    (rec,) = [r for r in AuditLog(log).records() if r["action"] == "push"]
    assert rec["outcome"] == "success" and rec["event"] == "110104"
    assert rec["detail"] == {"destination": research.dicomweb_url, "protocol": "STOW-RS", "sent": 5}
    assert rec["study"]["study_uid"] == str(original.StudyInstanceUID)


@pytest.mark.slow  # starts its own Orthanc or the command
def test_medsec_push_over_c_store_writes_nothing_and_arrives(make_orthanc, study, identities, tmp_path):
    path, original, uids = study
    research = make_orthanc(aet="RESEARCH")
    wrong = f"ELSEWHERE@127.0.0.1:{research.dicom_port}"  # Orthanc checks the called AE title
    with pytest.raises(MedsecError, match=rf"^{wrong}: association rejected; 0 of 5 instance\(s\) sent$"):
        push(path, wrong, identity=identities.x25519, secret=SECRET, progress=False)
    key = save_identity(identities.x25519, tmp_path / "site", None)[0]
    secret = tmp_path / "project.secret"
    secret.write_bytes(SECRET)
    scratch, work = tmp_path / "tmpdir", tmp_path / "cwd"
    scratch.mkdir()
    work.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "medsec_nb.cli", "push", str(path), "--to", f"RESEARCH@127.0.0.1:{research.dicom_port}"]
        + ["-i", str(key), "--secret-file", str(secret), "--purpose", "HRESCH", "-q"],
        cwd=work,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert f"sent 5 de-identified instance(s) to RESEARCH@127.0.0.1:{research.dicom_port}" in r.stderr
    assert os.listdir(scratch) == [] and os.listdir(work) == []
    assert len(research.get_json("/instances")) == 5
    _nothing_findable(research, original, uids)


@pytest.mark.slow  # starts its own Orthanc or the command
def test_a_leak_sends_nothing(make_orthanc, tmp_path, identities):
    datasets = synthesize_datasets(3, rows=16, columns=16)
    datasets[2].BodyPartExamined = str(datasets[2].PatientID)  # kept by the profile: a leak
    path = encrypt_datasets(datasets, tmp_path / "leaky.msec", [identities.x25519], progress=False)
    research = make_orthanc(aet="RESEARCH")
    with pytest.raises(LeakError, match=r"instance 3: .*\(0018,0015\)"):
        push(path, research.dicomweb_url, identity=identities.x25519, secret=SECRET, progress=False)
    assert research.get_json("/instances") == []


@pytest.mark.slow  # runs the command
@pytest.mark.parametrize("scheme", ["stow", "dimse"])
def test_a_pacs_that_is_down_is_one_line(scheme, tmp_path, study, identities):
    path, _, _ = study
    port = free_port()
    dest = f"http://127.0.0.1:{port}/dicom-web" if scheme == "stow" else f"RESEARCH@127.0.0.1:{port}"
    key = save_identity(identities.x25519, tmp_path / "site", None)[0]
    secret = tmp_path / "project.secret"
    secret.write_bytes(SECRET)
    r = subprocess.run(
        [sys.executable, "-m", "medsec_nb.cli", "push", str(path), "--to", dest, "-i", str(key)]
        + ["--secret-file", str(secret), "--purpose", "HRESCH", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"medsec: error: {dest}: cannot connect (is the PACS up?); 0 of 5 instance(s) sent"
    )
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_destinations_are_checked():
    assert str(Destination.parse("http://user:pw@pacs:8042/dicom-web/?x=1")) == "http://pacs:8042/dicom-web"
    assert Destination.parse("RESEARCH@pacs.example:4242") == Destination(None, "RESEARCH", "pacs.example", 4242)
    for bad in ("pacs:4242", "AE@pacs", "AE@pacs:99999", "ftp://pacs"):
        with pytest.raises(MedsecError, match="not a destination"):
            Destination.parse(bad)
