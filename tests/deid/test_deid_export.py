"""De-identified export: plain and encrypted sources and outputs, report, dry run, leak scan,
burned-in text, mapping, audit records, atomicity; the ``medsec deid`` CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medsec_nb import open_study
from medsec_nb.audit import AuditLog
from medsec_nb.core.errors import AuthenticationError, MedsecError, NoMatchingRecipientError, OutputError
from medsec_nb.deid import find_leaks, identifying_values
from medsec_nb.deid.export import LeakError
from medsec_nb.deid.pixels import BurnedInError, MaskRuleError, burned_in_reason, load_mask_rules
from medsec_nb.study.export import export_deidentified, read_mapping

SECRET = b"deid-export-test-secret-0123456789"
SCRIPT = Path(sys.executable).with_name("medsec")


def _originals(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir())]


def _needles(datasets) -> set[str]:
    return set().union(*(identifying_values(ds) for ds in datasets))


def _records(log: Path) -> list[dict]:
    return list(AuditLog(log).records())


def _no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if p.name.endswith(".part")]


def test_folder_export_is_clean_consistent_and_audited(series_source, tmp_path):
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "DEID"
    report = export_deidentified(
        series_source.folder,
        out,
        options=["retain-long-modified-dates"],
        secret=SECRET,
        purpose="HRESCH",
        audit_log=log,
        progress=False,
    )
    files = sorted(out.iterdir())
    assert len(files) == len(series_source.files) == report.instances
    originals = _originals(series_source.folder)
    needles = _needles(originals)
    outs = [pydicom.dcmread(f) for f in files]
    for f, ds in zip(files, outs):
        assert not find_leaks(ds, needles)
        assert f.name == f"{ds.SOPInstanceUID}.dcm" and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES" and ds.pixel_array.shape == (64, 80)
    assert len({ds.SeriesInstanceUID for ds in outs}) == 1 and len({ds.StudyInstanceUID for ds in outs}) == 1
    assert {ds.StudyInstanceUID for ds in outs} != {ds.StudyInstanceUID for ds in originals}
    assert {str(ds.StudyDate) for ds in outs} != {str(ds.StudyDate) for ds in originals}
    summary = report.to_json()
    assert summary["actions"]["pseudonymised"] == 2 * len(files)
    assert summary["attributes"]["StudyDate"] == {"shifted": len(files)}
    assert summary["leak_scan"] == {"instances_scanned": len(files), "hits": 0, "accepted": []}
    rec = _records(log)[-1]
    assert (rec["action"], rec["outcome"], rec["event"], rec["why"]["purpose"]) == (
        "deid-export",
        "success",
        "110106",
        "HRESCH",
    )
    assert rec["study"]["instances"] == len(files)
    assert "retain-long-modified-dates" in rec["detail"]["profile"]


def test_same_secret_same_output_uids(series_source, tmp_path):
    a = export_deidentified(series_source.folder, tmp_path / "a", secret=SECRET, progress=False)
    b = export_deidentified(series_source.folder, tmp_path / "b", secret=SECRET, progress=False)
    assert a.instances == b.instances
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())


def test_dry_run_writes_nothing_and_redacts_the_diff(series_source, tmp_path):
    report = export_deidentified(series_source.folder, tmp_path / "never", dry_run=True, progress=False)
    assert not (tmp_path / "never").exists()
    lines = report.diff_lines()
    text = "\n".join(lines).upper()
    assert any("PATIENTNAME" in line.upper() and "PSEUDONYMISED" in line.upper() for line in lines)
    for needle in _needles(_originals(series_source.folder)):
        assert needle.upper() not in text
    assert "<REDACTED" in text


def test_encrypted_output_straight_to_container(series_source, identities, tmp_path):
    out = tmp_path / "deid.msec"
    export_deidentified(series_source.folder, out, secret=SECRET, recipients=[identities.p256], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deid.msec"]  # no plaintext beside it
    needles = _needles(_originals(series_source.folder))
    with open_study(out, identities.p256, purpose="HRESCH") as study:
        assert study.instance_count == len(series_source.files)
        for ds in study.series[0]:
            assert not find_leaks(ds, needles) and ds.PatientIdentityRemoved == "YES"


def test_from_encrypted_study_both_ways(signed_container, series_source, identities, tmp_path):
    needles = _needles(_originals(series_source.folder))
    with open_study(signed_container, identities.x25519, purpose="HRESCH") as study:
        report = study.export_deidentified(tmp_path / "from-study", secret=SECRET, progress=False)
    assert report.instances == len(series_source.files)
    report = export_deidentified(
        signed_container, tmp_path / "from-path", identity=identities.rsa3072, secret=SECRET, progress=False
    )
    a, b = sorted((tmp_path / "from-study").iterdir()), sorted((tmp_path / "from-path").iterdir())
    assert [p.name for p in a] == [p.name for p in b]  # same secret, same new UIDs
    for p in a:
        assert not find_leaks(pydicom.dcmread(p), needles)


def test_leak_fails_the_export_and_writes_nothing(series_source, tmp_path):
    src = tmp_path / "SRC"
    shutil.copytree(series_source.folder, src)
    victim = sorted(src.iterdir())[3]
    ds = pydicom.dcmread(victim)
    ds.BodyPartExamined = str(ds.PatientID)  # not in Table E.1-1: kept, so it leaks
    ds.save_as(victim)
    with pytest.raises(LeakError) as err:
        export_deidentified(src, tmp_path / "OUT", secret=SECRET, progress=False)
    assert str(victim) in str(err.value) and "(0018,0015)" in str(err.value)
    assert str(ds.PatientID) not in str(err.value)
    assert not (tmp_path / "OUT").exists()
    _no_leftovers(tmp_path)
    with pytest.raises(LeakError):
        export_deidentified(src, tmp_path / "OUT.msec", secret=SECRET, recipients=[_pub(tmp_path)], progress=False)
    assert not (tmp_path / "OUT.msec").exists()
    _no_leftovers(tmp_path)


def _pub(tmp_path: Path):
    from medsec_nb import generate_identity

    return generate_identity().public


def test_existing_output_is_refused_and_left_intact(series_source, tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        export_deidentified(series_source.folder, out, secret=SECRET, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_secret_is_required_and_checked(series_source, tmp_path):
    with pytest.raises(MedsecError, match="secret is required"):
        export_deidentified(series_source.folder, tmp_path / "o", progress=False)
    with pytest.raises(MedsecError, match="at least 16 bytes"):
        export_deidentified(series_source.folder, tmp_path / "o", secret=b"short", progress=False)
    with pytest.raises(MedsecError, match="unknown de-identification option"):
        export_deidentified(series_source.folder, tmp_path / "o", secret=SECRET, options=["retain-all"], progress=False)


# ---------------------------------------------------------------- burned-in text


@pytest.fixture()
def us_source(tmp_path) -> Path:
    folder = tmp_path / "US"
    folder.mkdir()
    shutil.copyfile(get_testdata_file("US1_UNCR.dcm"), folder / "us.dcm")
    return folder


RULES = """
[[rule]]
name = "GE ultrasound header band"
match = { Modality = "US", Manufacturer = "G.E. Medical Systems", Rows = 480, Columns = 640 }
rectangles = [[0, 0, 640, 40], [600, 440, 40, 40]]
"""


def test_flagging():
    assert burned_in_reason(pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))).startswith("modality US")
    assert burned_in_reason(pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))).startswith("modality OT")
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert burned_in_reason(ct) is None
    ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # a secondary capture, even of a CT
    assert "SOP class Secondary Capture Image Storage (a capture)" in burned_in_reason(ct)
    ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.BurnedInAnnotation = "YES"
    assert burned_in_reason(ct) == "Burned In Annotation is YES"
    assert burned_in_reason(pydicom.dcmread(get_testdata_file("rtplan.dcm"))) is None  # no pixels


def test_flagged_instance_is_refused(us_source, tmp_path):
    with pytest.raises(BurnedInError, match="--allow-burned-in"):
        export_deidentified(us_source, tmp_path / "OUT", secret=SECRET, progress=False)
    assert not (tmp_path / "OUT").exists()


def test_mask_rule_blanks_rectangles_and_clears_the_flag(us_source, tmp_path):
    rules = tmp_path / "masks.toml"
    rules.write_text(RULES)
    report = export_deidentified(us_source, tmp_path / "OUT", secret=SECRET, mask_rules=rules, progress=False)
    assert report.burned_in[0]["outcome"] == "masked by rule 'GE ultrasound header band'"
    (out,) = (tmp_path / "OUT").iterdir()
    ds = pydicom.dcmread(out)
    before = pydicom.dcmread(us_source / "us.dcm").pixel_array
    after = ds.pixel_array
    assert before[:40].any() and not after[:40].any() and not after[440:, 600:].any()
    assert np.array_equal(after[40:440], before[40:440])
    assert ds.BurnedInAnnotation == "NO"


def test_override_is_audited(us_source, tmp_path):
    log = tmp_path / "audit.jsonl"
    export_deidentified(us_source, tmp_path / "OUT", secret=SECRET, allow_burned_in=True, audit_log=log, progress=False)
    actions = [(r["action"], r["outcome"]) for r in _records(log)]
    assert actions == [("burned-in-override", "success"), ("deid-export", "success")]
    assert _records(log)[0]["detail"]["reason"].startswith("modality US")


@pytest.mark.parametrize(
    "text, message",
    [
        ("rule = 3", "non-empty list 'rule'"),
        ("[[rule]]\nname = 'a'\nmatch = { Nonsense = 'US' }\nrectangles = [[0, 0, 1, 1]]", "not a DICOM keyword"),
        ("[[rule]]\nname = 'a'\nmatch = { Modality = 'US' }\nrectangles = [[0, 0, -1, 1]]", "is not [x, y, width"),
        ("[[rule]]\nname = 'a'\nmatch = { Modality = 'US' }\nrectangles = [[0, 0, 1, 1]]\ncolour = 1", "unknown field"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_bad_rule_files_name_file_and_problem(tmp_path, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(MaskRuleError) as err:
        load_mask_rules(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_json_rule_file_and_out_of_image_rectangle(us_source, tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps({"rule": [{"name": "too wide", "match": {"Modality": "US"}, "rectangles": [[600, 0, 100, 10]]}]})
    )
    with pytest.raises(MedsecError, match="outside the 640x480 image"):
        export_deidentified(us_source, tmp_path / "OUT", secret=SECRET, mask_rules=path, progress=False)
    assert not (tmp_path / "OUT").exists()


# ---------------------------------------------------------------- mapping


def test_mapping_round_trip_is_encrypted_and_audited(series_source, identities, tmp_path):
    log = tmp_path / "audit.jsonl"
    mapping = tmp_path / "map.json"
    export_deidentified(
        series_source.folder,
        tmp_path / "OUT",
        secret=SECRET,
        mapping=mapping,
        mapping_recipients=[identities.x25519],
        audit_log=log,
        progress=False,
    )
    originals = _originals(series_source.folder)
    raw = mapping.read_text()
    for needle in _needles(originals) | {str(originals[0].SOPInstanceUID)}:
        assert needle not in raw
    data = read_mapping(mapping, identities.x25519, purpose="HRESCH", audit_log=log)
    pid = str(originals[0].PatientID)
    out_names = {p.name for p in (tmp_path / "OUT").iterdir()}
    assert data["patients"][pid]["pseudonym"].startswith("ANON-")
    assert {f"{data['uids'][str(ds.SOPInstanceUID)]}.dcm" for ds in originals} == out_names
    assert [r["action"] for r in _records(log)] == ["deid-export", "deid-mapping", "reidentify"]
    with pytest.raises(NoMatchingRecipientError):
        read_mapping(mapping, identities.other_x25519, purpose="HRESCH", audit_log=log)
    assert _records(log)[-1]["outcome"] == "failure"
    tampered = json.loads(raw)
    tampered["note"] = {"studies": ["1.2.3"]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tampered))
    with pytest.raises(AuthenticationError, match=str(bad)):
        read_mapping(bad, identities.x25519, purpose="HRESCH", audit_log=log)


def test_reidentify_record_names_the_key_that_opened_the_mapping(series_source, identities, tmp_path):
    log = tmp_path / "audit.jsonl"
    mapping = tmp_path / "map.json"
    export_deidentified(
        series_source.folder,
        tmp_path / "deid.msec",
        secret=SECRET,
        recipients=[identities.x25519],
        mapping=mapping,
        mapping_recipients=[identities.x25519],
        audit_log=log,
        progress=False,
    )
    read_mapping(mapping, identities.x25519, purpose="HRESCH", audit_log=log)
    rec = _records(log)[-1]
    assert (rec["action"], rec["outcome"], rec["who"]["key_id"]) == ("reidentify", "success", identities.x25519.key_id)
    with pytest.raises(NoMatchingRecipientError):
        read_mapping(mapping, identities.other_x25519, purpose="HRESCH", audit_log=log)
    rec = _records(log)[-1]
    assert (rec["outcome"], rec["who"]["key_id"]) == ("failure", identities.other_x25519.key_id)


# ---------------------------------------------------------------- CLI


def medsec(*args, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "medsec_nb.cli"]
    return subprocess.run(
        cmd + [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_cli(series_source, identities, tmp_path):
    from medsec_nb import save_identity

    save_identity(identities.x25519, tmp_path / "site")
    (tmp_path / "project.secret").write_bytes(SECRET)
    r = medsec("deid", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "examples:" in r.stdout and "--mask-rules" in r.stdout
    r = medsec("deid", series_source.folder, "--dry-run", "--purpose", "HRESCH", "-q", cwd=tmp_path)
    assert r.returncode == 0 and "PatientName" in r.stdout and "would de-identify" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project.secret", "site.key", "site.pub"]
    r = medsec(
        "deid",
        series_source.folder,
        "-o",
        "OUT",
        "--secret-file",
        "project.secret",
        "--purpose",
        "HRESCH",
        "--option",
        "retain-long-modified-dates",
        "--report",
        "report.json",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "report.json").read_text())["instances"] == len(series_source.files)
    r = medsec(
        "deid",
        series_source.folder,
        "-o",
        "deid.msec",
        "--encrypt",
        "-r",
        "site.pub",
        "--secret-file",
        "project.secret",
        "--purpose",
        "HRESCH",
        "--mapping",
        "map.json",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = medsec("reidentify", "map.json", "-i", "site.key", "--purpose", "HRESCH", cwd=tmp_path)
    assert r.returncode == 0 and str(pydicom.dcmread(series_source.files[0]).PatientID) in r.stdout
    for args, code in (
        (("-o", "X", "--encrypt"), 1),
        (("-o", "X", "-r", "site.pub"), 1),
        (("-o", "OUT", "--secret-file", "project.secret"), 1),
        (("--option", "bogus"), 2),
    ):
        r = medsec("deid", series_source.folder, *args, "--purpose", "HRESCH", "-q", cwd=tmp_path)
        assert r.returncode == code and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "X").exists()


def test_policy_denial_is_recorded_and_writes_nothing(series_source, identities, tmp_path):
    from medsec_nb.core.errors import PolicyDeniedError

    policy = tmp_path / "site.csv"
    policy.write_text(
        "p, @local, *, *, *, *, allow\np, @local, *, export, *, *, deny\np, @local, *, reveal-tag, HRESCH, *, deny\n"
    )
    log = tmp_path / "audit.jsonl"
    with pytest.raises(PolicyDeniedError):
        export_deidentified(
            series_source.folder, tmp_path / "OUT", secret=SECRET, policy=policy, audit_log=log, progress=False
        )
    assert not (tmp_path / "OUT").exists()
    rec = _records(log)[-1]
    assert (rec["action"], rec["outcome"]) == ("deid-export", "denied")
    mapping = tmp_path / "map.json"
    export_deidentified(
        series_source.folder,
        tmp_path / "OUT2",
        secret=SECRET,
        mapping=mapping,
        mapping_recipients=[identities.x25519],
        audit_log=log,
        progress=False,
    )
    with pytest.raises(PolicyDeniedError):
        read_mapping(mapping, identities.x25519, purpose="HRESCH", policy=policy, audit_log=log)
    assert (_records(log)[-1]["action"], _records(log)[-1]["outcome"]) == ("reidentify", "denied")


@pytest.mark.parametrize(
    "charset, name, planted",
    [
        ("ISO_IR 100", "Doe^Jane", "jane doe's scanner"),  # unparsed, other case: found as bytes
        ("ISO_IR 192", "Müller^Jürgen", "MÜLLER"),  # UTF-8, upper-cased non-ASCII
        ("ISO_IR 144", "Иванов^Иван", "Иванов"),  # Cyrillic: parsed, then searched
    ],
)
def test_scanner_finds_values_in_unparsed_elements(tmp_path, charset, name, planted):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet, ds.PatientName = charset, name
    ds.Manufacturer = planted  # not in Table E.1-1: kept
    path = tmp_path / "x.dcm"
    ds.save_as(path)
    fresh = pydicom.dcmread(path)  # every element still raw
    with pytest.raises(LeakError, match=r"\(0008,0070\)"):
        export_deidentified(path, tmp_path / "OUT", secret=SECRET, progress=False)
    assert find_leaks(fresh, identifying_values(pydicom.dcmread(path)))


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
        "emri_small_big_endian.dcm",
        "image_dfl.dcm",
        "ExplVR_BigEnd.dcm",
        "liver.dcm",
        "waveform_ecg.dcm",
        "JPEG-lossy.dcm",
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "gdcm-US-ALOKA-16.dcm",
        "color3d_jpeg_baseline.dcm",
    ],
)
def test_pydicom_test_files_pass_through_the_export(tmp_path, name):
    src = get_testdata_file(name)
    report = export_deidentified(
        src, tmp_path / "OUT", secret=SECRET, options=["retain-safe-private"], allow_burned_in=True, progress=False
    )
    (out,) = (tmp_path / "OUT").iterdir()
    ds = pydicom.dcmread(out)
    assert [e.tag for e in ds.iterall()] and ds.PatientIdentityRemoved == "YES"
    assert report.instances == 1 and not find_leaks(ds, identifying_values(pydicom.dcmread(src)))


def test_mask_on_compressed_pixels_writes_them_uncompressed(tmp_path):
    folder = tmp_path / "SC"
    folder.mkdir()
    shutil.copyfile(get_testdata_file("SC_rgb_rle.dcm"), folder / "sc.dcm")
    rules = tmp_path / "masks.json"
    rules.write_text(
        json.dumps(
            {"rule": [{"name": "corner", "match": {"Rows": 100, "Columns": 100}, "rectangles": [[0, 0, 30, 20]]}]}
        )
    )
    export_deidentified(folder, tmp_path / "OUT", secret=SECRET, mask_rules=rules, progress=False)
    (out,) = (tmp_path / "OUT").iterdir()
    ds = pydicom.dcmread(out)
    before = pydicom.dcmread(folder / "sc.dcm").pixel_array
    assert not ds.file_meta.TransferSyntaxUID.is_compressed and ds.BurnedInAnnotation == "NO"
    assert before[:20, :30].any() and not ds.pixel_array[:20, :30].any()
    assert np.array_equal(ds.pixel_array[20:], before[20:])


def test_accepted_leak_element_is_let_through_reported_and_audited(tmp_path):
    """MR_small's InstitutionName equals its kept Manufacturer: refused unless accepted, then listed."""
    src = get_testdata_file("MR_small.dcm")
    log = tmp_path / "audit.jsonl"
    (tmp_path / "project.secret").write_bytes(SECRET)
    env_log = {"MEDSEC_AUDIT_LOG": str(log)}
    r = medsec(
        "deid",
        src,
        "-o",
        "OUT",
        "--secret-file",
        "project.secret",
        "--purpose",
        "HRESCH",
        "-q",
        cwd=tmp_path,
        env=env_log,
    )
    assert r.returncode == 1 and "(0008,0070)" in r.stderr and not (tmp_path / "OUT").exists()
    r = medsec(
        "deid",
        src,
        "-o",
        "OUT",
        "--secret-file",
        "project.secret",
        "--purpose",
        "HRESCH",
        "-q",
        "--accept-leak-in",
        "Manufacturer",
        "--report",
        "report.json",
        cwd=tmp_path,
        env=env_log,
    )
    assert r.returncode == 0, r.stderr
    accepted = json.loads((tmp_path / "report.json").read_text())["leak_scan"]["accepted"]
    assert [a["element"] for a in accepted] == ["(0008,0070) LO"]
    record = _records(log)[-1]
    assert (record["action"], record["outcome"]) == ("deid-export", "success")
    assert "(0008,0070)" in json.dumps(record) and "TOSHIBA" not in json.dumps(record).upper()
    with pytest.raises(MedsecError, match="not a DICOM keyword"):
        export_deidentified(src, tmp_path / "OUT2", secret=SECRET, accept_leaks_in=["NoSuchKeyword"], progress=False)
    with pytest.raises(MedsecError, match="not a DICOM keyword"):
        export_deidentified(
            src, tmp_path / "OUT2", secret=SECRET, accept_leaks_in=["Manufacturer:Nope"], progress=False
        )


def test_refusal_suggests_the_narrow_override_and_the_cli_takes_it(tmp_path):
    """The one-line refusal's override, pasted as is, lets exactly that value through (audited)."""
    src = get_testdata_file("rtplan.dcm")
    log = tmp_path / "audit.jsonl"
    (tmp_path / "project.secret").write_bytes(SECRET)
    args = ["deid", src, "--secret-file", "project.secret", "--purpose", "HRESCH", "-q"]
    r = medsec(*args, "-o", "OUT", cwd=tmp_path, env={"MEDSEC_AUDIT_LOG": str(log)})
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and not (tmp_path / "OUT").exists()
    overrides = r.stderr.split("re-run with ")[1].removesuffix(" (audited)\n").split()
    assert overrides == [
        "--accept-leak-in",
        "Manufacturer:InstitutionName",
        "--accept-leak-in",
        "ManufacturerModelName:InstitutionName",
    ]
    r = medsec(
        *args, "-o", "OUT", *overrides, "--report", "report.json", cwd=tmp_path, env={"MEDSEC_AUDIT_LOG": str(log)}
    )
    assert r.returncode == 0, r.stderr
    accepted = json.loads((tmp_path / "report.json").read_text())["leak_scan"]["accepted"]
    assert [(a["element"], a["original"]) for a in accepted] == [
        ("(0008,0070) LO", "InstitutionName"),
        ("(0008,1090) LO", "InstitutionName"),
    ]
    assert _records(log)[-1]["outcome"] == "success"
