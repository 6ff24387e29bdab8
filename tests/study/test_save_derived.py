"""``Study.save_derived``: derived DICOM objects (here a highdicom Segmentation of the study) stored
encrypted in a new container, made in memory, for the opener's key, the key service's site keys or
recipients the policy lets the results go to; audited as ``derived``; one-line errors that leave
nothing behind."""

from __future__ import annotations

import json
import multiprocessing
import os
import pwd
import signal
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from conftest import PASSPHRASE
from medsec_nb import MedsecError, NoMatchingRecipientError, PolicyDeniedError, StudyClosedError, open_study
from medsec_nb.access.gate import container_id
from medsec_nb.access.policy import Policy
from medsec_nb.audit import AuditLog
from medsec_nb.audit.export import fhir_audit_event
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.core.errors import OutputError, SourceError
from medsec_nb.keys.identity import save_identity
from medsec_nb.keyservice import KeyServiceConfig, serve
from medsec_nb.testdata import synthesize_datasets


def _files_under(folder: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs}


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def made(tmp_path, identities) -> Path:
    """A 4-slice CT series made in memory and encrypted to the x25519 identity (no plaintext file)."""
    folder = tmp_path / "in"
    folder.mkdir()
    return encrypt_datasets(synthesize_datasets(4, rows=32, columns=32), folder / "ct.msec", [identities.x25519])


def _segmentation(series) -> hd.seg.Segmentation:
    """A binary Segmentation of the voxels above the series' median, referencing its instances."""
    volume = series.volume()
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="above median",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="threshold", version="1", family=codes.cid7162.ArtificialIntelligence
        ),
    )
    return hd.seg.Segmentation(
        source_images=list(series),
        pixel_array=(volume > np.median(volume)).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medsec-nb tests",
        manufacturer_model_name="threshold",
        software_versions="1",
        device_serial_number="0",
    )


def test_segmentation_round_trips_encrypted_and_nothing_else_is_written(made, tmp_path, identities, monkeypatch):
    scratch, out = tmp_path / "tmp", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    log = tmp_path / "in" / "audit.jsonl"
    with open_study(made, identities.x25519, audit_log=log) as study:
        seg = _segmentation(study.series[0])
        assert 0 < int(seg.pixel_array.sum()) < seg.pixel_array.size
        dest = study.save_derived([seg], out / "seg.msec")
    assert dest == out / "seg.msec"
    assert _files_under(out) == {str(dest)} and _files_under(scratch) == set()  # no plaintext, no temporary
    assert pydicom.dcmread(get_testdata_file("CT_small.dcm")).PatientName.family_name.encode() not in dest.read_bytes()
    record = _records(log)[-1]
    assert (record["action"], record["outcome"], record["event"]) == ("derived", "success", "110103")
    assert record["detail"] == {
        "container": container_id(dest),
        "derived_instances": 1,
        "recipients": "default",
        "sop_classes": [SegmentationStorage],
    }
    assert record["study"]["container_sha256"] == container_id(made)
    assert fhir_audit_event(record)["action"] == "C"  # DICOM/FHIR action: create
    with pytest.raises(NoMatchingRecipientError):  # the opener's key only
        open_study(dest, identities.other_x25519, audit_log=log)
    with open_study(dest, identities.x25519, audit_log=log) as back:
        (series,) = back.series
        got = series[0]
        assert got.SOPClassUID == SegmentationStorage and got.SOPInstanceUID == seg.SOPInstanceUID
        assert got.StudyInstanceUID == seg.StudyInstanceUID
        assert np.array_equal(got.pixel_array, seg.pixel_array)
        again = hd.seg.Segmentation.from_dataset(got)
        assert again.number_of_segments == 1


def test_opened_with_a_key_file_goes_to_its_pub_beside_it(made, tmp_path, identities):
    key, _pub = save_identity(identities.x25519, tmp_path / "site")
    with open_study(made, key, audit_log=tmp_path / "audit.jsonl") as study:
        dest = study.save_derived([_copy_of_first(study)], tmp_path / "d.msec")
    with open_study(dest, identities.x25519, audit_log=tmp_path / "audit.jsonl") as back:
        assert back.instance_count == 1


def _copy_of_first(study) -> pydicom.Dataset:
    """A secondary-capture-like derived instance: the first slice under a new SOP Instance UID."""
    ds = pydicom.Dataset(study.series[0][0])
    ds.file_meta = study.series[0][0].file_meta
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
    ds.SeriesInstanceUID = hd.UID()
    return ds


def test_given_recipients_need_the_policys_export(made, tmp_path, identities):
    log, policy = tmp_path / "audit.jsonl", tmp_path / "policy.csv"
    with open_study(made, identities.x25519, audit_log=log) as study:
        dest = study.save_derived([_copy_of_first(study)], tmp_path / "p.msec", [identities.p256])
    with pytest.raises(NoMatchingRecipientError):
        open_study(dest, identities.x25519, audit_log=log)
    with open_study(dest, identities.p256, audit_log=log) as back:
        assert back.instance_count == 1
    policy.write_text("p, @local, *, decrypt, *, *, allow\n")
    with open_study(made, identities.x25519, audit_log=log, policy=policy) as study:
        with pytest.raises(PolicyDeniedError):
            study.save_derived([_copy_of_first(study)], tmp_path / "q.msec", [identities.p256])
        assert not (tmp_path / "q.msec").exists()
        study.save_derived([_copy_of_first(study)], tmp_path / "r.msec")  # the opener's own key: no export
    derived = [(r["outcome"], r["detail"]) for r in _records(log) if r["action"] == "derived"]
    assert [outcome for outcome, _ in derived] == ["success", "denied", "success"]
    assert derived[0][1]["recipients"] == "given" and derived[2][1]["recipients"] == "default"
    assert "export" in derived[1][1]["reason"]


@pytest.mark.parametrize("case", ["other study", "not dicom", "exists", "passphrase opened"])
def test_errors_are_one_line_and_leave_nothing(case, made, tmp_path, identities, passphrase_container):
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "d.msec"
    if case == "passphrase opened":
        study = open_study(passphrase_container, passphrase=PASSPHRASE, audit_log=log)
    else:
        study = open_study(made, identities.x25519, audit_log=log)
    with study:
        items: list = [_copy_of_first(study)]
        error, message = MedsecError, "opened with a passphrase; give recipients="
        if case == "other study":
            items.append(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
            error, message = SourceError, "instance 2: belongs to another study than"
        elif case == "not dicom":
            items = [b"not DICOM at all"]
            error, message = SourceError, "instance 1: not a"
        elif case == "exists":
            dest.write_bytes(b"keep me")
            error, message = OutputError, "already exists"
        with pytest.raises(error, match=message) as info:
            study.save_derived(items, dest)
        assert "\n" not in str(info.value)
    assert _files_under(out) == ({str(dest)} if case == "exists" else set())
    if case == "exists":
        assert dest.read_bytes() == b"keep me"
    else:
        failures = [r for r in _records(log) if r["action"] == "derived"]
        assert [r["outcome"] for r in failures] == ["failure"] and failures[0]["detail"]["reason"] == str(info.value)


def test_closed_study_is_refused(made, tmp_path, identities):
    study = open_study(made, identities.x25519, audit_log=tmp_path / "audit.jsonl")
    item = _copy_of_first(study)
    study.close()
    with pytest.raises(StudyClosedError, match="closed"):
        study.save_derived([item], tmp_path / "d.msec")
    assert not (tmp_path / "d.msec").exists()


def test_opened_through_the_key_service_goes_to_the_site_keys(tmp_path, identities):
    """A real key service (this test process forked, serving on a Unix socket) holding the p256 site
    key: the study opens without a key file, and the derived container goes to the site's key."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    (tmp_path / "site.csv").write_text(f"p, {me}, *, decrypt, HRESCH, *, allow\n")
    study_path = encrypt_datasets(synthesize_datasets(2, rows=16, columns=16), tmp_path / "s.msec", [identities.p256])
    config = KeyServiceConfig(
        socket=tmp_path / "ks.sock",
        identities=[identities.p256],
        log=AuditLog(tmp_path / "service.jsonl", checkpoints=tmp_path / "service.checkpoints"),
        policy=Policy.load(tmp_path / "site.csv"),
    )
    fork = multiprocessing.get_context("fork")
    ready = fork.Event()
    proc = fork.Process(target=serve, args=(config,), kwargs={"ready": ready.set})
    proc.start()
    try:
        assert ready.wait(30), "the key service did not start"
        with open_study(study_path, keyservice=config.socket, purpose="HRESCH") as study:
            dest = study.save_derived([_copy_of_first(study)], tmp_path / "d.msec")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)
    with pytest.raises(NoMatchingRecipientError):
        open_study(dest, identities.x25519, audit_log=tmp_path / "audit.jsonl")
    with open_study(dest, identities.p256, audit_log=tmp_path / "audit.jsonl") as back:
        assert back.instance_count == 1
    (record,) = [r for r in _records(tmp_path / "service.jsonl") if r["action"] == "derived"]
    assert record["outcome"] == "success" and record["detail"]["recipients"] == "default"


def test_a_file_appearing_while_the_derived_container_is_written_is_never_replaced(made, tmp_path, identities):
    """The race between save_derived's exists() check and the rename: the instances are consumed after the
    check, so a generator that creates ``dest`` on its first step puts a file there exactly in that window."""
    log = tmp_path / "audit.jsonl"
    dest = tmp_path / "out" / "d.msec"
    dest.parent.mkdir()
    with open_study(made, identities.x25519, audit_log=log) as study:
        item = _copy_of_first(study)

        def appearing():
            dest.write_bytes(b"someone else's")
            yield item

        with pytest.raises(OutputError, match="already exists"):
            study.save_derived(appearing(), dest)
    assert dest.read_bytes() == b"someone else's"
    assert _files_under(dest.parent) == {str(dest)}  # no temporary left
    assert [r["outcome"] for r in _records(log) if r["action"] == "derived"] == ["failure"]
