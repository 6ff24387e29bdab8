"""The de-identification engine on real files, with generated cases for every Table E.1-1 row."""

from __future__ import annotations

import copy
import datetime as dt
import io

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medsec_nb.deid import DeidKeys, Profile, deidentify, display_action, find_leaks, identifying_values, resolve, table
from medsec_nb.deid.engine import SCRUB_MARKER

KEYS = DeidKeys(b"test secret for medsec-nb deid!!")
BASIC = Profile()
CONTAINER = "DerivationCodeSequence"  # not in Table E.1-1: kept, its items de-identified
SKIPPED = {  # rows not generated as single attributes, and why
    "50XX,XXXX": "group rule, tested in test_overlays_and_curves",
    "60XX,3000": "group rule, tested in test_overlays_and_curves",
    "60XX,4000": "group rule, tested in test_overlays_and_curves",
    "GGGG,EEEE (GGGG odd)": "private attributes, tested in test_private_*",
}


_CT = pydicom.dcmread(get_testdata_file("CT_small.dcm"))


@pytest.fixture
def ct() -> pydicom.FileDataset:
    """A private deep copy of CT_small (``Dataset.copy`` is shallow)."""
    return copy.deepcopy(_CT)


def _tag(row: table.Row) -> int:
    return int(row.tag.replace(",", ""), 16)


def _marker(vr: str, tag: int) -> object:
    text = f"MRK{tag:08X}"
    return {
        "PN": f"Mrk^{tag:08X}",
        "DA": "19870605",
        "TM": "112233",
        "DT": "19870605112233",
        "AS": "093Y",
        "DS": "987.5",
        "IS": "98765",
        "UI": f"1.2.999.{tag}",
        "UR": f"http://mrk.example/{tag:08X}",
        "US": 4242,
        "SS": 4242,
        "UL": 4242,
        "SL": 4242,
        "FL": 42.5,
        "FD": 42.5,
        "OB": text.encode(),
        "OW": text.encode(),
        "UN": text.encode(),
    }.get(vr, text)


def _generated_rows() -> list:
    params = []
    for row in table.rows():
        if row.tag in SKIPPED:
            continue
        params.append(pytest.param(row, id=f"{row.tag}-{row.keyword or 'unnamed'}"))
    return params


def test_skips_are_only_the_group_rows():
    assert len(_generated_rows()) + len(SKIPPED) == len(table.rows())


def _check(out_ds: Dataset, tag: int, vr: str, marker: object, code: str, top: bool) -> None:
    keyword = pydicom.datadict.keyword_for_tag(tag)
    if keyword == "PatientID" or (keyword == "PatientName" and top):
        assert str(out_ds[tag].value).startswith("ANON-")
        return
    if code == "X":
        assert tag not in out_ds
        return
    value = out_ds[tag].value
    if code == "Z":
        assert value in (None, "", b"") or (vr == "SQ" and len(value) == 0)
    elif code == "D":
        assert value not in (None, "", b"") and value != marker
        if vr == "SQ":
            assert len(value) == 1 and len(value[0]) == 0
    elif code == "U":
        if vr == "UI":
            assert str(value).startswith("2.25.") and value != marker
        else:
            assert vr == "SQ" and len(value) == 1
    else:
        pytest.fail(f"basic profile gave code {code}")


@pytest.mark.parametrize("row", _generated_rows())
def test_basic_profile_every_attribute_top_and_nested(ct, row):
    tag = _tag(row)
    vr = dictionary_VR(tag).split(" ")[0]
    ds = copy.deepcopy(ct)
    markers = []
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPInstanceUID = f"1.2.999.{tag}.1"
        item.OperatorsName = f"Mrk^Op{tag:08X}"
        markers += [item.ReferencedSOPInstanceUID, str(item.OperatorsName)]
        value = Sequence([item])
    else:
        value = _marker(vr, tag)
        if isinstance(value, str):
            markers.append(value)
    ds.add_new(tag, vr, value)
    inner = Dataset()
    inner.add_new(tag, vr, Sequence([Dataset(e) for e in value]) if vr == "SQ" else value)
    ds.add_new(pydicom.datadict.tag_for_keyword(CONTAINER), "SQ", Sequence([inner]))

    out = deidentify(ds, BASIC, KEYS)
    code = resolve(row, BASIC)
    assert code in row.basic.rstrip("*").split("/")
    _check(out, tag, vr, value, code, top=True)
    _check(getattr(out, CONTAINER)[0], tag, vr, value, code, top=False)
    assert find_leaks(out, markers) == []
    assert tag in ds and ds[tag].value == value  # the input is unchanged


@pytest.mark.parametrize(
    "options",
    [
        frozenset(),
        frozenset(
            {"clean-structured-content", "clean-descriptors", "retain-long-modified-dates", "retain-safe-private"}
        ),
    ],
)
def test_input_unchanged(ct, options):
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", f"about {ct.PatientName}"
    item.DateTime = "20200101101010"
    ct.ContentSequence = Sequence([item])
    before, meta = ct.to_json_dict(), ct.file_meta.to_json_dict()
    out = deidentify(ct, Profile(options), KEYS)
    assert ct.to_json_dict() == before and ct.file_meta.to_json_dict() == meta
    assert out.to_json_dict() != before and out.file_meta.to_json_dict() != meta


def _with_patient(ct, pid: str, study: str, dates: tuple[str, str]) -> Dataset:
    ds = copy.deepcopy(ct)
    ds.PatientID, ds.StudyInstanceUID = pid, study
    ds.StudyDate, ds.AcquisitionDate = dates
    ds.StudyTime = "101500"
    return ds


def _day(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y%m%d").date()


def test_modified_dates_shift_per_patient_and_keep_intervals(ct):
    profile = Profile(frozenset({"retain-long-modified-dates"}))
    a = deidentify(_with_patient(ct, "P1", "1.2.3.1", ("20200101", "20200111")), profile, KEYS)
    b = deidentify(_with_patient(ct, "P1", "1.2.3.2", ("20210301", "20210301")), profile, KEYS)
    c = deidentify(_with_patient(ct, "P2", "1.2.3.3", ("20200101", "20200111")), profile, KEYS)
    assert (_day(a.AcquisitionDate) - _day(a.StudyDate)).days == 10
    shift_a = (dt.date(2020, 1, 1) - _day(a.StudyDate)).days
    assert shift_a == (dt.date(2021, 3, 1) - _day(b.StudyDate)).days and shift_a >= 1
    assert c.StudyDate != a.StudyDate  # another patient, another shift
    assert a.StudyTime == "101500" and a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert a.PatientID == b.PatientID != c.PatientID


def test_basic_profile_blanks_dates_and_full_dates_keep_them(ct):
    ds = _with_patient(ct, "P1", "1.2.3.1", ("20200101", "20200111"))
    basic = deidentify(ds, BASIC, KEYS)
    assert not basic.StudyDate and "AcquisitionDate" not in basic
    full = deidentify(ds, Profile(frozenset({"retain-long-full-dates"})), KEYS)
    assert (full.StudyDate, full.AcquisitionDate) == ("20200101", "20200111")


def test_retain_uids(ct):
    out = deidentify(ct, Profile(frozenset({"retain-uids"})), KEYS)
    assert (out.SOPInstanceUID, out.StudyInstanceUID) == (ct.SOPInstanceUID, ct.StudyInstanceUID)
    basic = deidentify(ct, BASIC, KEYS)
    assert basic.SOPInstanceUID != ct.SOPInstanceUID
    assert basic.file_meta.MediaStorageSOPInstanceUID == basic.SOPInstanceUID
    assert basic.SOPClassUID == ct.SOPClassUID


@pytest.mark.parametrize("option, kept", [("retain-patient-characteristics", True), (None, False)])
def test_patient_characteristics(ct, option, kept):
    ds = copy.deepcopy(ct)
    ds.PatientSex, ds.PatientAge = "F", "047Y"
    out = deidentify(ds, Profile(frozenset({option} - {None})), KEYS)
    got = (out.get("PatientSex"), out.get("PatientAge"))
    assert (got == ("F", "047Y")) is kept


def test_uid_references_consistent_across_files(ct):
    a = copy.deepcopy(ct)
    b = copy.deepcopy(ct)
    b.SOPInstanceUID = "1.2.826.0.1.3680043.99.2"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = a.SOPClassUID, a.SOPInstanceUID
    b.ReferencedImageSequence = Sequence([ref])
    out_a, out_b = deidentify(a, BASIC, KEYS), deidentify(b, BASIC, KEYS)
    assert out_b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_a.SOPInstanceUID
    assert out_b.StudyInstanceUID == out_a.StudyInstanceUID
    assert out_b.SOPInstanceUID != out_a.SOPInstanceUID
    assert deidentify(a, BASIC, DeidKeys(b"another secret, other uids!!")).SOPInstanceUID != out_a.SOPInstanceUID


def _private(ds: Dataset, group: int, creator: str, elem: int, vr: str, value: object) -> None:
    block = ds.private_block(group, creator, create=True)
    block.add_new(elem, vr, value)


def test_private_tag_with_patient_name_removed_everywhere(ct):
    ds = copy.deepcopy(ct)
    _private(ds, 0x0009, "MEDSEC TEST", 0x01, "LO", str(ct.PatientName))
    item = Dataset()
    _private(item, 0x0011, "MEDSEC TEST", 0x02, "LO", str(ct.PatientName))
    ds.DerivationCodeSequence = Sequence([item])
    for profile in (BASIC, Profile(frozenset({"retain-safe-private"}))):
        out = deidentify(ds, profile, KEYS)
        assert 0x00090010 not in out and 0x00091001 not in out
        assert not [e for e in out.DerivationCodeSequence[0] if e.tag.is_private]
        assert find_leaks(out, [str(ct.PatientName)]) == []
    assert not [e for e in deidentify(ds, BASIC, KEYS) if e.tag.is_private]


def test_private_safe_kept_only_with_option_and_listing(ct):
    ds = copy.deepcopy(ct)
    _private(ds, 0x00E1, "ELSCINT1", 0x21, "DS", "12.5")  # Table E.3.10-1: DLP
    _private(ds, 0x00E1, "ELSCINT1", 0x22, "LO", "Doe^Jane")  # same block, not listed
    basic = deidentify(ds, BASIC, KEYS)
    assert not [e for e in basic if e.tag.is_private]
    safe = deidentify(ds, Profile(frozenset({"retain-safe-private"})), KEYS)
    kept = {int(e.tag): e.value for e in safe if e.tag.is_private}
    assert kept[0x00E10010] == "ELSCINT1" and kept[0x00E11021] == "12.5" and 0x00E11022 not in kept
    assert kept[0x00190010] == "GEMS_ACQU_01"  # CT_small's own safe GE attributes
    for tag in kept:
        if tag & 0xFFFF >= 0x1000:
            creator = safe[(tag >> 16, (tag & 0xFFFF) >> 8)].value
            assert table.is_safe_private(tag, creator)
    assert display_action(0x00E11021, Profile(frozenset({"retain-safe-private"})), "ELSCINT1") == "keep"
    assert display_action(0x00E11022, Profile(frozenset({"retain-safe-private"})), "ELSCINT1") == "remove"


@pytest.mark.parametrize("profile", [BASIC, Profile(frozenset({"clean-graphics"}))])
def test_overlays_curves_and_dropped_sequences(ct, profile):
    ds = copy.deepcopy(ct)
    ds.add_new(0x60020010, "US", 4)
    ds.add_new(0x60023000, "OW", b"\x01\x02" * 4)
    ds.add_new(0x60024000, "LT", "Overlay by Doe")
    ds.add_new(0x50000005, "US", 2)
    ds.OriginalAttributesSequence = Sequence([Dataset()])
    ds.add_new(0xFFFAFFFA, "SQ", Sequence([Dataset()]))
    out = deidentify(ds, profile, KEYS)
    assert 0x60020010 in out
    for tag in (0x60023000, 0x50000005, 0x04000561, 0xFFFAFFFA):
        assert tag not in out
    if profile.options:  # C: comments cleaned, bitmaps removed
        assert out[0x60024000].value == "DEIDENTIFIED"
    else:
        assert 0x60024000 not in out


def test_method_attributes(ct):
    options = frozenset({"retain-uids", "clean-descriptors"})
    out = deidentify(ct, Profile(options), KEYS)
    assert out.PatientIdentityRemoved == "YES"
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113105", "DCM"), ("113110", "DCM")]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_profile_validation():
    with pytest.raises(ValueError):
        Profile(frozenset({"retain-everything"}))
    with pytest.raises(ValueError):
        Profile(frozenset({"retain-long-full-dates", "retain-long-modified-dates"}))


@pytest.mark.parametrize(
    "attr, profile, expected",
    [
        ("PatientName", BASIC, "replace"),
        ("PatientAge", BASIC, "remove"),
        ("PatientAge", Profile(frozenset({"retain-patient-characteristics"})), "keep"),
        ("Rows", BASIC, "keep"),
        ("SOPInstanceUID", BASIC, "replace"),
        ("SOPInstanceUID", Profile(frozenset({"retain-uids"})), "keep"),
        ("ReferencedImageSequence", BASIC, "keep"),
        ("ContentSequence", BASIC, "replace"),
        (0x60023000, BASIC, "remove"),
        (0x00090010, BASIC, "remove"),
    ],
)
def test_display_action(attr, profile, expected):
    assert display_action(attr, profile) == expected


def test_leak_scanner_finds_planted_values(ct):
    out = deidentify(ct, BASIC, KEYS)
    values = identifying_values(ct)
    assert str(ct.PatientName) in values and ct.PatientID in values
    assert find_leaks(out, values) == []
    _private(out, 0x0009, "MEDSEC TEST", 0x01, "LO", f"x {ct.PatientID} y")
    item = Dataset()
    item.CodeMeaning = str(ct.PatientName).lower()
    _private(item, 0x0011, "MEDSEC TEST", 0x02, "OB", b"\x00" + str(ct.PatientName).encode() + b"\x00")
    out.DerivationCodeSequence = Sequence([item])
    hits = find_leaks(out, values)
    assert "(0009,1001) LO" in hits
    assert "(0008,9215)[0]/(0008,0104) LO" in hits
    assert "(0008,9215)[0]/(0011,1002) OB" in hits


def test_leak_scanner_searches_pixel_data_for_long_values_only(ct):
    """Short values match native pixel bytes by chance; values of BULK_MIN_LEN or more are searched."""
    from medsec_nb.deid.scan import BULK_MIN_LEN

    out = deidentify(ct, BASIC, KEYS)
    short, long_ = "RG1", "Lestrade^G"
    assert len(short) < BULK_MIN_LEN <= len(long_)
    pixels = bytearray(out.PixelData)
    pixels[100:103] = short.encode()
    out.PixelData = bytes(pixels)
    assert find_leaks(out, [short]) == []
    out.ImageComments = f"seen {short}"
    assert find_leaks(out, [short]) == ["(0020,4000) LT"]
    pixels[200 : 200 + len(long_)] = long_.lower().encode()
    out.PixelData = bytes(pixels)
    assert find_leaks(out, [long_]) == ["(7FE0,0010) OW"]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm", "US1_UNCR.dcm"])
def test_pydicom_files_pass_through_and_stay_readable(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available offline")
    ds = pydicom.dcmread(path)
    out = deidentify(ds, BASIC, KEYS)
    buf = io.BytesIO()
    out.save_as(buf)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert back.PatientIdentityRemoved == "YES" and str(back.PatientName).startswith("ANON-")
    patient = {str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))}
    assert find_leaks(back, patient) == []
    if "PixelData" in ds:
        assert back.PixelData == ds.PixelData


def _option_rows() -> list:
    params = []
    for row in table.rows():
        for option, code in sorted(row.options.items()):
            if row.tag not in SKIPPED:
                params.append(pytest.param(row, option, code, id=f"{option}-{row.tag}-{row.keyword}"))
    return params


@pytest.mark.parametrize("row, option, code", _option_rows())
def test_each_option_on_every_row_it_names(ct, row, option, code):
    tag = _tag(row)
    vr = dictionary_VR(tag).split(" ")[0]
    value = Sequence([Dataset()]) if vr == "SQ" else _marker(vr, tag)
    scrubbed = option == "clean-descriptors" and code == "C" and vr in ("LO", "LT", "SH", "ST", "UC", "UT")
    if scrubbed:  # free text naming the patient
        value = f"{value} {ct.PatientID}"
    ct.add_new(tag, vr, value)
    profile = Profile(frozenset({option}))
    assert resolve(row, profile) == code
    out = deidentify(ct, profile, KEYS)
    if code == "K":
        kept = out[tag].value
        assert (len(kept) == 1) if vr == "SQ" else kept == value
    elif scrubbed:  # cleaned: the name replaced, the rest kept
        assert out[tag].value == value.replace(str(ct.PatientID), SCRUB_MARKER)[: 16 if vr == "SH" else None]
        assert not find_leaks(out, identifying_values(ct))
    elif vr in ("OB", "OW", "UN"):
        assert tag not in out  # C on binary data: cannot clean, removed
    elif vr == "SQ":
        assert len(out[tag].value) == 1  # C on a sequence: kept, items cleaned
    elif vr == "TM" and option == "retain-long-modified-dates":
        assert out[tag].value == value  # whole-day shift leaves times alone
    elif vr in ("DA", "DT") and option == "retain-long-modified-dates":
        shifted = str(out[tag].value)
        assert shifted != value and _day(shifted[:8]) < _day(value[:8]) and shifted[8:] == value[8:]
    elif vr == "UI":
        assert str(out[tag].value).startswith("2.25.")
    else:
        assert out[tag].value not in (value, None, "")
