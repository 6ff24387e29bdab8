"""``send_deidentified``: the de-identified export made in memory and handed to a sender (``medsec push``);
the same bytes as a folder export with the same secret, nothing written, nothing sent after a leak."""

from __future__ import annotations

import os
import shutil

import pydicom
import pytest

from medsec_nb.audit import AuditLog
from medsec_nb.core.errors import MedsecError
from medsec_nb.deid.export import LeakError
from medsec_nb.study.export import export_deidentified, send_deidentified

SECRET = b"a project secret of 32 bytes...."


def _files_under(folder) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs}


def test_sent_bytes_equal_a_folder_export_and_nothing_is_written(series_source, tmp_path):
    log = tmp_path / "audit.jsonl"
    sent: list[bytes] = []

    def send(instances: list[bytes]) -> dict:
        sent.extend(instances)
        return {"destination": "test", "sent": len(instances)}

    before = _files_under(tmp_path)
    report = send_deidentified(
        series_source.folder, send, destination="test", secret=SECRET, progress=False, audit_log=log
    )
    assert _files_under(tmp_path) - before == {str(log)}  # the audit log, nothing else
    assert report.instances == 6 and report.output == "test" and report.leak_hits == 0
    export_deidentified(series_source.folder, tmp_path / "OUT", secret=SECRET, progress=False, audit_log=log)
    assert sorted(sent) == sorted(p.read_bytes() for p in (tmp_path / "OUT").iterdir())
    original = pydicom.dcmread(series_source.files[0])
    for data in sent:
        assert str(original.PatientID).encode() not in data and str(original.StudyInstanceUID).encode() not in data
    push = [r for r in AuditLog(log).records() if r["action"] == "push"]
    assert len(push) == 1 and push[0]["event"] == "110104" and push[0]["outcome"] == "success"
    assert push[0]["detail"] == {"destination": "test", "sent": 6} and push[0]["study"]["instances"] == 6


def test_a_leak_sends_nothing(series_source, tmp_path):
    src = tmp_path / "SRC"
    shutil.copytree(series_source.folder, src)
    victim = sorted(src.iterdir())[4]
    ds = pydicom.dcmread(victim)
    ds.BodyPartExamined = str(ds.PatientID)  # kept by the profile: a leak
    ds.save_as(victim)
    calls = []
    with pytest.raises(LeakError, match=r"\(0018,0015\)"):
        send_deidentified(
            src, calls.append, destination="test", secret=SECRET, progress=False, audit_log=tmp_path / "a.jsonl"
        )
    assert calls == []
    actions = [(r["action"], r["outcome"]) for r in AuditLog(tmp_path / "a.jsonl").records()]
    assert actions == [("deid-export", "failure")]


def test_a_failed_send_is_recorded(series_source, tmp_path):
    def send(instances: list[bytes]) -> dict:
        raise MedsecError("research PACS: cannot connect")

    with pytest.raises(MedsecError, match="cannot connect"):
        send_deidentified(
            series_source.folder, send, destination="x", secret=SECRET, progress=False, audit_log=tmp_path / "a.jsonl"
        )
    (push,) = [r for r in AuditLog(tmp_path / "a.jsonl").records() if r["action"] == "push"]
    assert push["outcome"] == "failure" and "cannot connect" in push["detail"]["reason"]
