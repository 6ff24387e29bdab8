"""Real files from elsewhere (issue 18 item 7): every file pydicom ships as test data, one study per
file, through ``encrypt`` -> ``decrypt`` and ``deid`` as a user would, in-process."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

import medsec_nb
from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main
from medsec_nb.core.errors import MedsecError
from medsec_nb.deid.export import IMPLEMENTATION_CLASS_UID, LeakError, implementation_version_name
from medsec_nb.deid.pixels import BurnedInError
from medsec_nb.study.export import export_deidentified

pytestmark = pytest.mark.slow

SECRET = b"real-files-test-secret-0123456789"
FILES = sorted(p for p in map(Path, get_testdata_files()) if p.is_file())
MR_SMALL = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]
_TAG = re.compile(r"\([0-9A-F]{4},[0-9A-F]{4}\)")


def _one_line_naming(exc: MedsecError, path: Path) -> str:
    text = str(exc)
    assert "\n" not in text and str(path) in text, text
    return text


def _patient_values(path: Path) -> set[str]:
    """Patient name, ID and birth date of a file (whole values), as far as pydicom reads them."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        values = {str(ds.get(kw) or "").strip() for kw in ("PatientName", "PatientID", "PatientBirthDate")}
    except Exception:  # not DICOM at all: nothing to leak
        return set()
    return {v for v in values if len(v) >= 4}


def test_every_file_encrypt_accepts_decrypts_byte_for_byte(identities, tmp_path):
    """Whatever encrypt accepts, decrypt gives back byte for byte; the rest is a one-line refusal."""
    log = tmp_path / "audit.jsonl"
    same, refused = [], []
    for i, path in enumerate(FILES):
        box, out = tmp_path / f"{i}.msec", tmp_path / f"out{i}"
        try:
            medsec_nb.encrypt_study(path, box, recipients=[identities.x25519], progress=False)
        except MedsecError as exc:
            _one_line_naming(exc, path)
            refused.append(path.name)
            continue
        (got,) = medsec_nb.decrypt_study(box, out, identity=identities.x25519, audit_log=log, progress=False)
        assert got.read_bytes() == path.read_bytes(), path
        same.append(path.name)
    assert "bad_sequence.dcm" in same and "CT_small.dcm" in same and len(same) > len(refused)


def test_every_file_encrypt_accepts_reads_in_a_study_or_says_why(identities, tmp_path):
    """Open, every instance and every series' volume: a result or a one-line MedsecError naming the
    container (pydicom cannot decode some of its own test files' pixels), never another exception."""
    log = tmp_path / "audit.jsonl"
    read, no_pixels, undecodable = 0, [], []
    for i, path in enumerate(FILES):
        box = tmp_path / f"{i}.msec"
        try:
            medsec_nb.encrypt_study(path, box, recipients=[identities.x25519], progress=False)
        except MedsecError:
            continue
        with medsec_nb.open_study(box, identities.x25519, purpose="HRESCH", audit_log=log) as study:
            for series in study.series:
                for n in range(len(series)):
                    assert series[n].SOPInstanceUID
                try:
                    series.volume(progress=False)
                    read += 1
                except MedsecError as exc:
                    text = _one_line_naming(exc, box)
                    (no_pixels if "without pixel data" in text else undecodable).append(path.name)
                    assert "without pixel data" in text or "cannot be decoded" in text, text
    # files without File Meta decode with the syntax their encoding shows; what pydicom's own
    # decoders cannot read (a broken JPEG, a J2K stream with an embedded delimiter) says so
    assert read > 150 and len(no_pixels) > 30, (read, no_pixels)
    assert {"OT-PAL-8-face.dcm", "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm"}.isdisjoint(undecodable)
    assert len(undecodable) <= 3, undecodable


def test_malformed_study_uid_is_kept_out_of_the_audit_record(identities, tmp_path):
    """bad_sequence.dcm's Study Instance UID is 64 hex digits, not a UID: the record names the container."""
    src = Path(get_testdata_file("bad_sequence.dcm"))
    log = tmp_path / "audit.jsonl"
    medsec_nb.encrypt_study(src, tmp_path / "b.msec", recipients=[identities.x25519], progress=False)
    medsec_nb.verify_study(tmp_path / "b.msec", identities.x25519, audit_log=log)
    export_deidentified(src, tmp_path / "DEID", secret=SECRET, audit_log=log, progress=False)
    uid = pydicom.dcmread(src, stop_before_pixels=True).StudyInstanceUID
    records = list(AuditLog(log).records())
    assert [r["outcome"] for r in records] == ["success"] * len(records) and len(records) == 3
    assert all(r["study"]["study_uid"] is None for r in records)
    assert records[0]["study"]["container_sha256"] == medsec_nb.access.container_id(tmp_path / "b.msec")
    assert uid not in log.read_text()


def test_every_file_deidentifies_or_is_refused_actionably(tmp_path):
    """De-identified output with medsec-nb's own File Meta, or one line that names the file, says what
    to do, and shows no patient value."""
    done, leaks = [], []
    for i, path in enumerate(FILES):
        out = tmp_path / f"out{i}"
        try:
            export_deidentified(path, out, secret=SECRET, audit_log=tmp_path / "audit.jsonl", progress=False)
        except MedsecError as exc:
            text = _one_line_naming(exc, path)
            shown = _TAG.sub("", text.replace(str(path), "")).upper()
            assert not [v for v in _patient_values(path) if v.upper() in shown], text
            if isinstance(exc, LeakError):
                assert "--accept-leak-in" in text and "inside" in text, text
                leaks.append(path.name)
            if isinstance(exc, BurnedInError):
                assert "--allow-burned-in" in text
            continue
        (written,) = out.iterdir()
        meta = pydicom.dcmread(written, stop_before_pixels=True).file_meta
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.ImplementationVersionName == implementation_version_name()
        done.append(path.name)
    assert "bad_sequence.dcm" in done and "CT_small.dcm" in done
    assert set(MR_SMALL) <= set(leaks)


@pytest.mark.parametrize("name", MR_SMALL)
def test_leak_refusal_names_the_original_attribute_and_the_override(tmp_path, name):
    src = Path(get_testdata_file(name))
    with pytest.raises(LeakError) as err:
        export_deidentified(src, tmp_path / "OUT", secret=SECRET, progress=False)
    text = str(err.value)
    assert "InstitutionName (0008,0080)" in text and "inside Manufacturer (0008,0070) LO" in text
    assert "--accept-leak-in Manufacturer:InstitutionName" in text
    assert "TOSHIBA" not in text.upper()  # values are never shown, not even this one
    report = export_deidentified(
        src, tmp_path / "OUT", secret=SECRET, accept_leaks_in=["Manufacturer:InstitutionName"], progress=False
    )
    assert [(a["element"], a["original"]) for a in report.accepted_leaks] == [("(0008,0070) LO", "InstitutionName")]


def test_narrow_override_lets_only_that_original_through(tmp_path):
    """Accepting InstitutionName inside Manufacturer does not accept the patient's name there."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.Manufacturer = f"{ds.InstitutionName} for {ds.PatientName.family_name}"
    src = tmp_path / "mr.dcm"
    ds.save_as(src)
    with pytest.raises(LeakError) as err:
        export_deidentified(
            src, tmp_path / "OUT", secret=SECRET, accept_leaks_in=["Manufacturer:InstitutionName"], progress=False
        )
    text = str(err.value)
    assert "PatientName (0010,0010)" in text and "inside Manufacturer (0008,0070) LO" in text
    assert ds.PatientName.family_name.upper() not in text.upper() and not (tmp_path / "OUT").exists()


def test_patient_value_inside_a_coded_element_is_named_not_shown(tmp_path):
    """eCT_Supplemental's patient name part 'Perfusion' is also its Image Type: refused, value not shown."""
    src = Path(get_testdata_file("eCT_Supplemental.dcm"))
    with pytest.raises(LeakError) as err:
        export_deidentified(src, tmp_path / "OUT", secret=SECRET, progress=False)
    text = str(err.value)
    assert "PatientName (0010,0010)" in text and "inside ImageType (0008,0008) CS" in text
    assert "--accept-leak-in ImageType:PatientName" in text and "PERFUSION" not in text.upper()


def test_deidentified_file_meta_is_written_by_medsec(tmp_path):
    """mlut_18's Implementation Version Name OFFIS_DCMTK_351 holds its InstitutionName: the output's
    File Meta names medsec-nb as the implementation that wrote the new file (PS3.10)."""
    src = Path(get_testdata_file("mlut_18.dcm"))
    export_deidentified(
        src,
        tmp_path / "OUT",
        secret=SECRET,
        allow_burned_in=True,
        accept_leaks_in=["Manufacturer:InstitutionName"],
        progress=False,
    )
    (written,) = (tmp_path / "OUT").iterdir()
    meta = pydicom.dcmread(written).file_meta
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == implementation_version_name()
    assert len(implementation_version_name()) <= 16 and IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    assert pydicom.uid.UID(IMPLEMENTATION_CLASS_UID).is_valid


def test_cli_reports_library_warnings_in_one_line_each(tmp_path, capsys):
    """bad_sequence.dcm makes pydicom warn (invalid UI values): one line per warning, naming the file,
    no installation path, no value."""
    src = tmp_path / "STUDY" / "bad_sequence.dcm"
    src.parent.mkdir()
    shutil.copyfile(get_testdata_file("bad_sequence.dcm"), src)
    (tmp_path / "pw.txt").write_text("a study passphrase 8731\n")
    (tmp_path / "project.secret").write_bytes(SECRET)
    uid = pydicom.dcmread(src, stop_before_pixels=True).StudyInstanceUID
    for argv in (
        ["encrypt", str(src), "-o", str(tmp_path / "b.msec"), "--passphrase-file", str(tmp_path / "pw.txt"), "-q"],
        [
            "deid",
            str(src),
            "-o",
            str(tmp_path / "DEID"),
            "--secret-file",
            str(tmp_path / "project.secret"),
            "--purpose",
            "HRESCH",
            "-q",
        ],
    ):
        assert main(argv) == 0
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        warned = [ln for ln in lines if ln.startswith("medsec: warning: ")]
        assert warned and all(f"medsec: warning: {src}: " in ln for ln in warned), err
        assert "site-packages" not in err and "warn_and_log" not in err and uid not in err
        assert all(ln.startswith(("medsec: ", "conformance report")) for ln in lines), err


def test_own_file_meta_constants_are_not_leaks(tmp_path):
    """pydicom's dicomdirtests MR files have AccessionNumber '134', digits that occur inside
    medsec-nb's Implementation Class UID: a coincidence in a constant medsec-nb writes, not a leak."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.AccessionNumber = IMPLEMENTATION_CLASS_UID[8:12]
    ds.InstitutionName = "MEDSEC_NB"
    src = tmp_path / "ct.dcm"
    ds.save_as(src)
    report = export_deidentified(src, tmp_path / "OUT", secret=SECRET, progress=False)
    assert report.instances == 1 and report.leak_hits == 0 and not report.accepted_leaks
