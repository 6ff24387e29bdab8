"""Leak scanner: look for an original's identifying values anywhere in a (de-identified) dataset."""

from __future__ import annotations

from typing import Iterable, Iterator

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

#: Values shorter than this are not searched for (single letters and the like match by chance).
MIN_LEN = 3

IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "OperatorsName", "AccessionNumber",
)

_IDENTIFYING_TAGS = frozenset(tag_for_keyword(k) for k in IDENTIFYING_KEYWORDS)


def _walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, object, object]]:
    """(path, element, value) for every element at every depth, file meta included."""
    meta = getattr(ds, "file_meta", None) if not path else None
    for source in ([meta] if meta is not None else []) + [ds]:
        for elem in source:
            where = f"{path}({elem.tag.group:04X},{elem.tag.element:04X})"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or ()):
                    yield from _walk(item, f"{where}[{i}]/")
            else:
                yield where, elem, elem.value


def _texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, PersonName):
        return [str(value)] + [p for p in (value.family_name, value.given_name, value.middle_name) if p]
    if isinstance(value, (MultiValue, list, tuple)):
        return [t for v in value for t in _texts(v)]
    return [str(value)]


def identifying_values(ds: Dataset) -> set[str]:
    """Identifying values of an original dataset, at every depth: patient names (and their
    parts), IDs, birth date, address, institution, physicians, operators, accession number."""
    found: set[str] = set()
    for _, elem, value in _walk(ds):
        if elem.tag in _IDENTIFYING_TAGS:
            found.update(t.strip() for t in _texts(value) if len(t.strip()) >= MIN_LEN)
    return found


def find_leaks(ds: Dataset, identifying_values: Iterable[str]) -> list[str]:
    """Where any of ``identifying_values`` occurs (case-insensitive) in any element value of ``ds``,
    public or private, text or binary, at any depth. Each hit names the element path, never the value."""
    needles = {v.strip().upper() for v in identifying_values if len(v.strip()) >= MIN_LEN}
    byte_needles = {n.encode(enc) for n in needles for enc in ("utf-8", "latin-1", "utf-16-le")
                    if _encodable(n, enc)}
    hits = []
    for where, elem, value in _walk(ds):
        if isinstance(value, (bytes, bytearray)):
            hay = bytes(value).upper()
            found = any(b in hay for b in byte_needles)
        else:
            text = " ".join(_texts(value)).upper()
            found = any(n in text for n in needles)
        if found:
            hits.append(f"{where} {elem.VR}")
    return hits


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
