"""Redacted display of studies, series and datasets (issue 4, "Display").

The source series carries distinctive patient identifiers (and HTML in descriptive fields);
every display form is checked against the values read back from the source files.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from IPython.lib.pretty import pretty

import medsec_nb
from medsec_nb.deid.redacted import RedactedDataset, RedactedItem, redacted
from medsec_nb.deid.redaction import REDACTED
from medsec_nb.notebook.display import series_html, series_text, study_html, study_text
from medsec_nb.testdata import synthesize_series

PATIENT = {
    "PatientName": "Quixote^Alonso^Q",
    "PatientID": "MSX-4471-ZQ",
    "PatientBirthDate": "19470203",
    "InstitutionName": "Hospital of La Mancha",
    "ReferringPhysicianName": "Carrasco^Sanson",
}
HOSTILE = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("display") / "src"
    files = synthesize_series(folder, n_slices=4, rows=32, columns=32)
    for f in files:
        ds = pydicom.dcmread(f)
        for kw, value in PATIENT.items():
            setattr(ds, kw, value)
        ds.StudyDescription = HOSTILE  # redacted by the Basic Profile (X)
        ds.Manufacturer = HOSTILE  # kept by the Basic Profile: shown, so it must be escaped
        ds.save_as(f, enforce_file_format=True)
    return files


@pytest.fixture(scope="module")
def container(tmp_path_factory, source, identities) -> Path:
    dest = tmp_path_factory.mktemp("display_box") / "study.msec"
    medsec_nb.encrypt_study(
        source[0].parent, dest, recipients=[identities.x25519], signer=identities.signer, progress=False
    )
    return dest


@pytest.fixture
def study(container, identities):
    with medsec_nb.open_study(container, identity=identities.x25519, purpose="HRESCH") as st:
        yield st


def _forbidden(source: list[Path]) -> list[str]:
    """Identifying values and UIDs of the source files, read with pydicom."""
    out = set()
    for f in source:
        ds = pydicom.dcmread(f)
        out |= {
            str(ds.PatientName),
            str(ds.PatientID),
            str(ds.PatientBirthDate),
            str(ds.InstitutionName),
            str(ds.ReferringPhysicianName),
            ds.PatientName.family_name,
            ds.PatientName.given_name,
        }
    return sorted(out)


def _uids(source: list[Path]) -> list[str]:
    out = set()
    for f in source:
        ds = pydicom.dcmread(f)
        out |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    return sorted(out)


def _assert_clean(text: str, source: list[Path]) -> None:
    for value in _forbidden(source):
        assert value not in text, f"identifying value {value!r} displayed"


@pytest.fixture(scope="module")
def shown():
    """``shown(obj)``: what Jupyter would show for ``obj`` (IPython's display formatter, with the
    notebook layer's redacted displays registered), as {mime type: text}."""
    from IPython.testing import globalipapp

    from medsec_nb.notebook import register_displays

    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    register_displays(ip)
    formatters = ip.display_formatter.formatters
    formatters["text/html"].enabled = True  # a terminal shell shows text only; a kernel both
    return lambda obj: {mime: formatters[mime](obj) for mime in ("text/plain", "text/html")}


def test_study_display_lists_series_without_identifiers_or_uids(study, source, identities, shown):
    shows = shown(study)
    for text in (study_text(study), study_html(study), shows["text/plain"], shows["text/html"]):
        _assert_clean(text, source)
        for uid in _uids(source):
            assert uid not in text
        assert "CT" in text and "32 x 32" in text and "HRESCH" in text
        assert identities.x25519.key_id in text and identities.signer.key_id in text
    rows = study_text(study).splitlines()
    assert rows[0] == "Study study.msec: 1 series, 4 instances"
    assert rows[3].split() == ["0", "CT", "1", "4", "32", "x", "32"]


def test_series_display_redacts_the_first_header(study, source, shown):
    series = study.series[0]
    shows = shown(series)
    for text in (series_text(series), series_html(series), shows["text/plain"], shows["text/html"]):
        _assert_clean(text, source)
        assert "4 instances" in text and "spacing (z, y, x) 1.25" in text
        assert "PatientName" in text and "PatientID" in text and "PatientBirthDate" in text
    assert REDACTED in series_text(series)
    line = next(ln for ln in series_text(series).splitlines() if "PatientName" in ln)
    assert line.split()[-2:] == REDACTED.split()


def test_html_is_escaped(study):
    header_lines = series_text(study.series[0]).splitlines()
    assert any("StudyDescription" in ln and REDACTED in ln for ln in header_lines)
    html = series_html(study.series[0])
    assert HOSTILE not in html and "&lt;script&gt;" in html
    ds = redacted(study.series[0].header(0))
    assert HOSTILE not in ds._repr_html_() and "&lt;script&gt;" in ds._repr_html_()


def test_closed_study_and_series_display_without_decrypting(container, identities):
    st = medsec_nb.open_study(container, identity=identities.x25519)
    series = st.series[0]
    st.close()
    assert study_text(st) == "Study study.msec (closed)"
    assert "closed" in study_html(st) and "closed" in series_text(series) and "closed" in series_html(series)


def test_redacted_converts_in_place_and_keeps_values(study, source):
    ds = study.series[0][0]
    same = redacted(ds)
    assert same is ds and type(ds) is RedactedDataset and isinstance(ds, pydicom.dataset.FileDataset)
    ref = next(r for r in map(pydicom.dcmread, source) if r.SOPInstanceUID == ds.SOPInstanceUID)
    assert str(ds.PatientName) == PATIENT["PatientName"] and ds.PatientID == PATIENT["PatientID"]
    assert (ds.pixel_array == ref.pixel_array).all()
    assert ds.file_meta.TransferSyntaxUID == ref.file_meta.TransferSyntaxUID and ds.preamble == ref.preamble
    assert redacted(ds) is ds
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)  # still a complete FileDataset
    assert pydicom.dcmread(io.BytesIO(out.getvalue())).PatientID == PATIENT["PatientID"]
    assert type(copy.deepcopy(ds)) is RedactedDataset and type(ds.copy()) is RedactedDataset


def test_redacted_dataset_displays_are_redacted(study, source):
    ds = redacted(study.series[0][1])
    for text in (str(ds), repr(ds), pretty(ds), ds._repr_html_()):
        _assert_clean(text, source)
        assert "PatientName" in text and "Modality" in text and "PixelData" in text
    assert REDACTED in str(ds) and "redacted" in ds._repr_html_()


def test_sequence_items_and_slices_are_redacted_too(series_source):
    hidden = pydicom.dcmread(series_source.files[0]).OtherPatientIDsSequence[0].PatientID  # CT_small
    ds = redacted(pydicom.dcmread(series_source.files[0]))
    item = ds.OtherPatientIDsSequence[0]
    assert type(item) is RedactedItem and item.PatientID == hidden
    assert hidden not in repr(item) and hidden not in pretty(item) and REDACTED in str(item)
    group = ds[0x00100000:0x00110000]
    assert type(group) is RedactedItem and "CompressedSamples^CT1" not in repr(group)
    assert "CompressedSamples" not in repr(ds)


def test_redacted_refuses_other_classes():
    class Special(pydicom.Dataset):
        pass

    with pytest.raises(TypeError):
        redacted(Special())


def test_instances_and_headers_come_back_redacted(study, source):
    """Needs study._parse to call display.redacted (the lead's one-line change)."""
    series = study.series[0]
    assert type(series[0]) is RedactedDataset and type(series.header(0)) is RedactedDataset
    _assert_clean(repr(series[2]) + pretty(series.header(2)), source)


def test_identity_attributes_are_redacted_by_the_basic_profile():
    from pydicom import DataElement

    from medsec_nb.deid.redaction import is_identifying

    for kw, vr, value in (
        ("PatientName", "PN", "Doe^J"),
        ("PatientID", "LO", "123"),
        ("PatientBirthDate", "DA", "19700101"),
        ("PatientAddress", "LO", "Main St"),
        ("InstitutionName", "LO", "General"),
        ("ReferringPhysicianName", "PN", "Who^Dr"),
        ("AccessionNumber", "SH", "A1"),
        ("StationName", "SH", "CT01"),
        ("OtherPatientIDsSequence", "SQ", []),
        ("StudyInstanceUID", "UI", "1.2.3"),
    ):
        assert is_identifying(DataElement(kw, vr, value)), kw
    assert is_identifying(DataElement(0x00091001, "LO", "private value"))
    for kw, vr, value in (("Modality", "CS", "CT"), ("Rows", "US", 512), ("Manufacturer", "LO", "ACME")):
        assert not is_identifying(DataElement(kw, vr, value)), kw
