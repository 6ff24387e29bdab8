"""Apply PS3.15 Table E.1-1 (Basic Profile and options) to a dataset at every depth.

Rules beyond the table itself are listed in ``docs/DEID.md``.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from . import table
from .keyed import DeidKeys
from .scan import identifying_values, maybe_sequence

_D = TypeVar("_D", bound=Dataset)

OPTIONS = frozenset(table.OPTION_COLUMNS)

#: CID 7050 De-identification Method codes (DCM), by option; the Basic Profile is always listed.
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean-graphics": ("113103", "Clean Graphics Option"),
    "clean-structured-content": ("113104", "Clean Structured Content Option"),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
    "retain-long-full-dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain-long-modified-dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain-patient-characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain-device-identity": ("113109", "Retain Device Identity Option"),
    "retain-uids": ("113110", "Retain UIDs Option"),
    "retain-safe-private": ("113111", "Retain Safe Private Option"),
    "retain-institution-identity": ("113112", "Retain Institution Identity Option"),
}

#: Attributes with a combined code that are Type 1 or 2 in the common image IODs (CT, MR, US,
#: CR/DX, SC) or the RT Plan IOD; every other combined code resolves to its strictest choice.
IOD_TYPE: dict[str, int] = {
    "ContentDate": 2,
    "ContentTime": 2,
    "ContrastBolusAgent": 2,
    "AcquisitionContextSequence": 2,
    "RTPlanDate": 2,
    "RTPlanTime": 2,
}

DUMMY_TEXT = "DEIDENTIFIED"
_DUMMY: dict[str, object] = {
    "AE": DUMMY_TEXT,
    "AS": "000D",
    "CS": DUMMY_TEXT,
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "urn:x-deidentified",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_TEXT = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
#: What replaces an identifying value found inside a cleaned descriptor or text content item.
SCRUB_MARKER = "[REMOVED]"
_MAX_LEN = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}
_CONTENT_SEQUENCE = 0x0040A730
#: The attribute holding a content item's value, by Value Type (PS3.3 C.17.3).
_CONTENT_VALUE = {
    "TEXT": "TextValue",
    "DATETIME": "DateTime",
    "DATE": "Date",
    "TIME": "Time",
    "PNAME": "PersonName",
    "UIDREF": "UID",
}
_DROPPED = (0x04000561, 0xFFFAFFFA)  # Original Attributes Sequence, Digital Signatures Sequence


@dataclass(frozen=True)
class Profile:
    """The Basic Application Level Confidentiality Profile plus a set of its options."""

    options: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", frozenset(self.options))
        unknown = self.options - OPTIONS
        if unknown:
            raise ValueError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}")
        if {"retain-long-full-dates", "retain-long-modified-dates"} <= self.options:
            raise ValueError("retain-long-full-dates and retain-long-modified-dates exclude each other")


def _resolve_combined(code: str, keyword: str) -> str:
    choices = code.rstrip("*").split("/")
    if "U" in choices:  # X/Z/U*: keep reference sequences, replace their UIDs
        return "U"
    kind = IOD_TYPE.get(keyword, 3)
    if kind == 1 and "D" in choices:
        return "D"
    if kind <= 2:
        return "Z" if "Z" in choices else "D"
    return choices[0]  # X, or Z for Z/D: the strictest choice


def resolve(row: table.Row, profile: Profile) -> str:
    """The single action code (X, Z, D, K, C or U) for ``row`` under ``profile``.

    Among the enabled options that name a code for the row, C wins over K (the safer choice);
    without one, the basic code applies; combined codes are resolved by :data:`IOD_TYPE`.
    """
    codes = {row.options[o] for o in profile.options if o in row.options}
    code = "C" if "C" in codes else "K" if "K" in codes else row.basic
    return _resolve_combined(code, row.keyword) if "/" in code else code


def _as_tag(tag: int | str | BaseTag | tuple[int, int]) -> BaseTag:
    if isinstance(tag, str):
        found = tag_for_keyword(tag)
        if found is None:
            raise KeyError(f"unknown DICOM keyword {tag!r}")
        return Tag(found)
    return Tag(tag)


def display_action(tag: int | str | BaseTag | tuple[int, int], profile: Profile, creator: str = "") -> str:
    """What ``profile`` does to an attribute: ``"keep"``, ``"remove"`` or ``"replace"``.

    A kept sequence (K, C or U on SQ) is ``"keep"``: its items are de-identified one by one.
    Private tags need their private ``creator`` to be recognised as safe.
    """
    t = _as_tag(tag)
    if t.is_private:
        keep = "retain-safe-private" in profile.options and table.is_safe_private(t, creator)
        return "keep" if keep else "remove"
    if int(t) in _DROPPED:
        return "remove"
    row = table.lookup(t)
    if row is None:
        return "keep"
    vr = _vr_of(row, t)
    code = _effective(resolve(row, profile), row, vr)
    if code == "X":
        return "remove"
    return "keep" if code == "K" or (code in "CU" and vr == "SQ") else "replace"


def _vr_of(row: table.Row, tag: BaseTag) -> str:
    try:
        return dictionary_VR(tag).split(" ")[0]
    except KeyError:
        return row.vr.split(" ")[0]


def _effective(code: str, row: table.Row, vr: str) -> str:
    """C on bulk binary data (overlay bitmaps) or on curves cannot be cleaned here: remove instead."""
    return "X" if code == "C" and (vr in _BINARY or row.tag == table.CURVE_ROW) else code


class _Run:
    """One de-identification of one dataset: profile, keys and the patient's derived values."""

    def __init__(
        self, profile: Profile, keys: DeidKeys, patient_key: str, needles: frozenset[str] = frozenset()
    ) -> None:
        self.profile, self.keys = profile, keys
        self.pseudonym = keys.patient_pseudonym(patient_key)
        self.shift = dt.timedelta(days=keys.date_shift_days(patient_key))
        self.modified_dates = "retain-long-modified-dates" in profile.options
        self.clean_descriptors = "clean-descriptors" in profile.options
        words = sorted(needles, key=len, reverse=True)
        self._needles = re.compile("|".join(map(re.escape, words)), re.IGNORECASE) if words else None

    def clean(self, ds: Dataset, top: bool) -> None:
        self._private(ds)
        for tag in list(ds.keys()):
            if tag.is_private:
                continue
            if int(tag) in _DROPPED:
                del ds[tag]
                continue
            row = table.lookup(tag)
            if row is None:  # kept: parsed only if it may be a sequence to walk
                raw = ds.get_item(tag)
                if not isinstance(raw, RawDataElement) or maybe_sequence(raw):
                    elem = ds[tag]
                    if elem.VR == "SQ":
                        self._items(elem.value)
                continue
            elem = ds[tag]
            self._apply(ds, tag, elem, _effective(resolve(row, self.profile), row, elem.VR), top)

    def _items(self, seq: Sequence | None) -> None:
        for item in seq or ():
            self.clean(item, top=False)

    def _apply(self, ds: Dataset, tag: BaseTag, elem: pydicom.DataElement, code: str, top: bool) -> None:
        vr = elem.VR
        if elem.keyword == "PatientID" and code != "K":
            elem.value = self.keys.patient_pseudonym(str(elem.value or "")) if not top else self.pseudonym
        elif elem.keyword == "PatientName" and top and code != "K":
            elem.value = self.pseudonym
        elif code == "X":
            del ds[tag]
        elif code == "C" and int(tag) == _CONTENT_SEQUENCE:
            elem.value = self._content(elem.value)
        elif code == "K" or (code in "CU" and vr == "SQ"):
            if vr == "SQ":
                self._items(elem.value)
        elif code == "Z":
            elem.value = Sequence() if vr == "SQ" else (b"" if vr in _BINARY else None)
        elif vr == "UI":  # U, and D or C on a UID: keyed replacement
            elem.value = self._uids(elem.value)
        elif code == "C" and vr in ("DA", "DT", "TM") and self.modified_dates:
            elem.value = self._shift(elem.value, vr)
        elif code == "C" and vr in _TEXT and self.clean_descriptors:
            elem.value = self.scrub(elem.value, _MAX_LEN.get(vr))
        else:  # D, C and U on a VR that cannot hold a UID
            elem.value = _dummy(vr)

    def scrub(self, value: object, max_len: int | None = None) -> object:
        """Free text with every identifying value of the original replaced by :data:`SCRUB_MARKER`
        (cut to ``max_len``, the VR's maximum, when the marker made it longer)."""
        if self._needles is None or value in (None, ""):
            return value
        if isinstance(value, MultiValue):
            return [self._needles.sub(SCRUB_MARKER, str(v))[:max_len] for v in value]
        return self._needles.sub(SCRUB_MARKER, str(value))[:max_len]

    def _content(self, seq: Sequence | None) -> Sequence:
        """Clean Structured Content (Table E.3.4-1): drop, replace or keep each content item by its
        concept name; text kept is scrubbed; then Table E.1-1 applies inside every kept item."""
        kept = []
        for item in seq or ():
            code = self._content_code(item)
            if code == "X":
                continue
            self._content_value(item, code)
            self.clean(item, top=False)
            kept.append(item)
        return Sequence(kept)

    def _content_code(self, item: Dataset) -> str | None:
        names = item.get("ConceptNameCodeSequence") or ()
        if not names:
            return None
        name = names[0]
        row = table.content_row(
            str(name.get("CodingSchemeDesignator", "")), str(name.get("CodeValue", "")), str(item.get("ValueType", ""))
        )
        if row is None:
            return None
        codes = {row.options[o] for o in self.profile.options if o in row.options}
        code = "C" if "C" in codes else "K" if "K" in codes else row.basic
        return code.split("/")[0]  # X/D: the strictest choice, as for Table E.1-1

    def _content_value(self, item: Dataset, code: str | None) -> None:
        value_type = str(item.get("ValueType", ""))
        keyword = _CONTENT_VALUE.get(value_type)
        if keyword is None or keyword not in item:
            if value_type == "NUM" and code in ("D", "C"):
                for mv in item.get("MeasuredValueSequence") or ():
                    mv.NumericValue = "0"
            return
        elem = item[keyword]
        if code in (None, "K"):  # unlisted or kept: text is still scrubbed
            if value_type == "TEXT":
                elem.value = self.scrub(elem.value)
        elif value_type == "TEXT":
            elem.value = self.scrub(elem.value) if code == "C" and self.clean_descriptors else DUMMY_TEXT
        elif code == "C" and elem.VR in ("DA", "DT", "TM") and self.modified_dates:
            elem.value = self._shift(elem.value, elem.VR)
        elif elem.VR == "UI":
            elem.value = self._uids(elem.value)
        else:
            elem.value = _dummy(elem.VR)

    def _uids(self, value: object) -> object:
        if isinstance(value, MultiValue):
            return [self.keys.uid(str(v)) for v in value if str(v).strip()]
        return self.keys.uid(str(value or ""))

    def _shift(self, value: object, vr: str) -> object:
        if vr == "TM" or value in (None, ""):
            return value  # whole-day shifts leave times unchanged
        values = list(value) if isinstance(value, MultiValue) else [value]
        return [self._shift_one(str(v), vr) for v in values] if len(values) > 1 else self._shift_one(str(values[0]), vr)

    def _shift_one(self, text: str, vr: str) -> str:
        try:
            day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
        except ValueError:
            return str(_DUMMY[vr])
        return (day - self.shift).strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")

    def _private(self, ds: Dataset) -> None:
        keep_safe = "retain-safe-private" in self.profile.options
        private = [t for t in ds.keys() if t.is_private]  # noqa: SIM118 (iterating a Dataset yields elements)
        kept_blocks: set[tuple[int, int]] = set()
        for tag in private:
            if tag.element < 0x1000:
                continue
            block = Tag(tag.group, tag.element >> 8)
            creator = ds[block].value if block in ds else None
            if keep_safe and isinstance(creator, str) and table.is_safe_private(tag, creator):
                kept_blocks.add((tag.group, tag.element >> 8))
            else:
                del ds[tag]
        for tag in private:
            if tag.element < 0x1000 and (tag.group, tag.element) not in kept_blocks:
                del ds[tag]


def _dummy(vr: str) -> object:
    if vr == "SQ":
        return Sequence([Dataset()])
    if vr in _BINARY:
        return b"\x00\x00"
    return _DUMMY.get(vr, DUMMY_TEXT)


def _patient_key(ds: Dataset) -> str:
    pid = str(ds.get("PatientID", "") or "").strip()
    return pid or str(ds.get("PatientName", "") or "").strip()


def _mark(ds: Dataset, profile: Profile) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [f"medsec-nb PS3.15 {table.EDITION} Table E.1-1", *sorted(profile.options)]
    codes = [BASIC_CODE] + [OPTION_CODES[o] for o in sorted(profile.options) if o in OPTION_CODES]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED"
        if "retain-long-modified-dates" in profile.options
        else "UNMODIFIED"
        if "retain-long-full-dates" in profile.options
        else "REMOVED"
    )


def _copy(ds: _D) -> _D:
    """A copy to de-identify: new element objects (and sequence items, recursively) that share the
    original's immutable values and unparsed raw elements, so no value, pixel data included, is copied."""
    new = copy.copy(ds)
    new._dict = {}
    for tag, elem in ds._dict.items():
        if isinstance(elem, RawDataElement):
            new._dict[tag] = elem  # a named tuple: parsing it stores a new element in ``new``
            continue
        elem = copy.copy(elem)
        if elem.VR == "SQ":
            elem.value = Sequence([_copy(item) for item in elem.value or ()])
        new._dict[tag] = elem
    new.__dict__.update(
        _pixel_array=None,
        _pixel_id={},
        _pixel_array_opts=dict(ds.__dict__.get("_pixel_array_opts", {"use_pdh": False})),
    )
    meta = ds.__dict__.get("file_meta")
    if meta is not None:
        new.file_meta = _copy(meta)
    return new


def deidentify(ds: Dataset, profile: Profile, keys: DeidKeys, *, identifying: Iterable[str] | None = None) -> Dataset:
    """A de-identified copy of ``ds`` (with its file meta); ``ds``'s values are not changed.

    ``identifying``: the original's identifying values (:func:`identifying_values`), if already known;
    Clean Descriptors and Clean Structured Content scrub them from the free text they keep.
    """
    cleans_text = profile.options & {"clean-descriptors", "clean-structured-content"}
    needles = frozenset(identifying_values(ds) if identifying is None else identifying) if cleans_text else frozenset()
    out = _copy(ds)
    run = _Run(profile, keys, _patient_key(ds), needles)
    run.clean(out, top=True)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        run.clean(meta, top=False)
    _mark(out, profile)
    return out
