"""Clean Structured Content (Table E.3.4-1 2023b): generated tests per code row, and the shipped table."""

from __future__ import annotations

import copy

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medsec_nb.deid import DeidKeys, Profile, deidentify, find_leaks, identifying_values, table
from medsec_nb.deid.engine import SCRUB_MARKER

KEYS = DeidKeys(b"structured-content-test-secret!!")
CSC = "clean-structured-content"
_CT = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
MARK_TEXT = "MARKER TEXT 4711"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _item(row: table.ContentRow) -> Dataset:
    """A content item with this concept name, its value type and a recognisable value."""
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = row.value_type
    item.ConceptNameCodeSequence = Sequence([_code(row.value, row.scheme, row.meaning)])
    vt = row.value_type
    if vt == "TEXT":
        item.TextValue = MARK_TEXT
    elif vt == "DATETIME":
        item.DateTime = "19870605112233"
    elif vt == "DATE":
        item.Date = "19870605"
    elif vt == "TIME":
        item.Time = "112233"
    elif vt == "PNAME":
        item.PersonName = "Marker^Person"
    elif vt == "UIDREF":
        item.UID = "1.2.999.4711"
    elif vt == "NUM":
        mv = Dataset()
        mv.NumericValue = "4711"
        mv.MeasurementUnitsCodeSequence = Sequence([_code("1", "UCUM", "no units")])
        item.MeasuredValueSequence = Sequence([mv])
    elif vt == "CODE":
        item.ConceptCodeSequence = Sequence([_code("4711", "99TEST", "marker code")])
    elif vt in ("COMPOSITE", "IMAGE", "WAVEFORM"):
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = "1.2.999.4711"
        item.ReferencedSOPSequence = Sequence([ref])
    elif vt == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    return item


def _report(*items: Dataset) -> pydicom.Dataset:
    ds = copy.deepcopy(_CT)
    root = Dataset()
    root.ValueType = "CONTAINER"
    root.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    root.ContentSequence = Sequence(list(items))
    ds.ContentSequence = Sequence([root])
    return ds


def _rows() -> list:
    params = []
    for rows in table.structured_content().values():
        for row in rows:
            params.append(pytest.param(row, frozenset(), id=f"{row.scheme}-{row.value}-{row.value_type}-basic"))
            for option, code in sorted(row.options.items()):
                params.append(
                    pytest.param(
                        row, frozenset({option}), id=f"{row.scheme}-{row.value}-{row.value_type}-{option}-{code}"
                    )
                )
    return params


def _expected(row: table.ContentRow, options: frozenset[str]) -> str:
    codes = {row.options[o] for o in options if o in row.options}
    return ("C" if "C" in codes else "K" if "K" in codes else row.basic).split("/")[0]


def _value(item: Dataset) -> object:
    for kw in ("TextValue", "DateTime", "Date", "Time", "PersonName", "UID"):
        if kw in item:
            return item[kw].value
    if "MeasuredValueSequence" in item:
        return item.MeasuredValueSequence[0].NumericValue
    return None


def test_generated_cases_cover_every_row():
    rows = [r for rs in table.structured_content().values() for r in rs]
    assert len(rows) == 209
    assert len(_rows()) > 209 + 150


@pytest.mark.parametrize("row, options", _rows())
def test_content_item_by_concept_name(row, options):
    original = _item(row)
    before = _value(original)
    profile = Profile(options | {CSC})
    out = deidentify(_report(original), profile, KEYS)
    items = out.ContentSequence[0].ContentSequence
    code = _expected(row, options)
    if code == "X":
        assert len(items) == 0  # the whole content item is removed
        return
    assert len(items) == 1
    after = _value(items[0])
    name = items[0].ConceptNameCodeSequence[0]
    assert (name.CodeValue, name.CodingSchemeDesignator) == (row.value, row.scheme)
    if before is None:  # container, code, references: kept, walked
        return
    if row.value_type == "TEXT":
        # K keeps the text, C with Clean Descriptors scrubs it (no identifying value in it), D replaces it
        assert (after == before) if code in ("K", "C") else after == "DEIDENTIFIED"
    elif row.value_type == "UIDREF":
        assert str(after).startswith("2.25.")  # Table E.1-1 replaces UIDs at any depth anyway
    elif code == "C" and row.value_type in ("DATE", "DATETIME"):
        assert str(after)[:8] < str(before)[:8]  # shifted back
    elif code == "C" and row.value_type == "TIME":
        assert after == before  # whole-day shifts leave times alone
    elif code == "K" and row.value_type in ("DATE", "DATETIME", "TIME"):
        # Table E.1-1 still governs Date/DateTime/Time attributes of the item
        assert after in (before, "19000101", "19000101000000", "000000")
    elif code == "K":
        assert after == before
    else:
        assert after != before


def test_without_the_option_content_sequence_gets_the_basic_action():
    row = table.content_row("DCM", "121022", "TEXT")  # Accession Number, basic X
    out = deidentify(_report(_item(row)), Profile(), KEYS)
    assert len(out.ContentSequence) == 1 and len(out.ContentSequence[0]) == 0  # D: one empty item


def test_unlisted_text_is_kept_but_scrubbed_at_every_depth():
    ds = _report()
    finding = Dataset()
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = Sequence([_code("121073", "DCM", "Impression")])
    finding.TextValue = f"Nodule seen; patient {_CT.PatientName.family_name} called"
    nested = Dataset()
    nested.ValueType = "CONTAINER"
    nested.ConceptNameCodeSequence = Sequence([_code("111028", "DCM", "Image Library")])
    nested.ContentSequence = Sequence([finding])
    ds.ContentSequence[0].ContentSequence = Sequence([nested])
    out = deidentify(ds, Profile(frozenset({CSC})), KEYS)
    text = out.ContentSequence[0].ContentSequence[0].ContentSequence[0].TextValue
    assert text == f"Nodule seen; patient {SCRUB_MARKER} called"
    assert not find_leaks(out, identifying_values(ds))


def test_every_concept_and_value_type_is_known():
    kinds = {
        "TEXT",
        "DATETIME",
        "DATE",
        "TIME",
        "PNAME",
        "UIDREF",
        "NUM",
        "CODE",
        "COMPOSITE",
        "IMAGE",
        "WAVEFORM",
        "CONTAINER",
    }
    for rows in table.structured_content().values():
        for r in rows:
            assert r.value_type in kinds and r.basic in {"X", "D", "X/D"}
            assert set(r.options.values()) <= {"K", "C"}


def test_listed_text_with_clean_descriptors_is_scrubbed_not_dropped():
    row = table.content_row("DCM", "121071", "TEXT")  # Finding: X/D, C under Clean Descriptors
    item = _item(row)
    item.TextValue = f"Lesion; referred by {_CT.PatientID}"
    ds = _report(item)
    assert len(deidentify(ds, Profile(frozenset({CSC})), KEYS).ContentSequence[0].ContentSequence) == 0
    out = deidentify(ds, Profile(frozenset({CSC, "clean-descriptors"})), KEYS)
    assert out.ContentSequence[0].ContentSequence[0].TextValue == f"Lesion; referred by {SCRUB_MARKER}"
