"""Leak scanner: look for an original's identifying values anywhere in a (de-identified) dataset."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import PersonName

#: Values shorter than this are not searched for (single letters and the like match by chance).
MIN_LEN = 3
#: In bulk pixel-like data (Pixel Data, Float/Double Float Pixel Data, Overlay Data, Waveform Data)
#: shorter values match by chance (a 3-letter value occurs in a 512x512 image a few times in a
#: hundred): only values of at least this length are searched there.
BULK_MIN_LEN = 6
_BULK = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x54001010})

IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "AccessionNumber",
)

_IDENTIFYING_TAGS = frozenset(Tag(k) for k in IDENTIFYING_KEYWORDS)


#: Character sets whose encoded bytes hold ASCII text as ASCII: unparsed values can be searched as bytes.
_BYTE_SEARCHABLE = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})
_UNDEFINED = 0xFFFFFFFF


def maybe_sequence(elem: RawDataElement) -> bool:
    """Whether an unparsed element is, or may be, a sequence (then it must be parsed to be walked)."""
    if elem.VR == "SQ":
        return True
    if elem.VR not in (None, "UN"):
        return False
    try:
        return dictionary_VR(elem.tag) == "SQ"
    except KeyError:
        return elem.length == _UNDEFINED


def _searchable_as_bytes(ds: Dataset) -> bool:
    charset = ds.get("SpecificCharacterSet", "")
    values = [charset] if isinstance(charset, str) else list(charset)
    return all(str(v).strip() in _BYTE_SEARCHABLE for v in values)


def _walk(
    ds: Dataset, path: str = "", raw_ok: bool | None = None, parse: frozenset[int] = frozenset()
) -> Iterator[tuple[str, DataElement | RawDataElement, Any]]:
    """(path, element, value) for every element at every depth, file meta included.

    Unparsed non-sequence elements (outside ``parse``) are yielded as their raw bytes when the
    character set allows searching them as bytes; everything else is parsed."""
    if raw_ok is None:
        raw_ok = _searchable_as_bytes(ds)
    meta = getattr(ds, "file_meta", None) if not path else None
    for source in ([meta] if meta is not None else []) + [ds]:
        for tag in list(source.keys()):
            elem = source.get_item(tag)
            if not (raw_ok and isinstance(elem, RawDataElement) and int(tag) not in parse and not maybe_sequence(elem)):
                elem = source[tag]
            where = f"{path}({tag.group:04X},{tag.element:04X})"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or ()):
                    yield from _walk(item, f"{where}[{i}]/", raw_ok, parse)
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


def identifying_sources(ds: Dataset) -> dict[str, frozenset[str]]:
    """Identifying values of an original dataset, at every depth (as :func:`identifying_values`),
    each with the keywords of the attributes that hold it."""
    found: dict[str, set[str]] = {}
    for _, elem, value in _walk(ds, parse=_IDENTIFYING_TAGS):
        if elem.tag in _IDENTIFYING_TAGS:
            for text in _texts(value):
                if len(text.strip()) >= MIN_LEN:
                    found.setdefault(text.strip(), set()).add(keyword_for_tag(elem.tag))
    return {v: frozenset(k) for v, k in found.items()}


def identifying_values(ds: Dataset) -> set[str]:
    """Identifying values of an original dataset, at every depth: patient names (and their
    parts), IDs, birth date, address, institution, physicians, operators, accession number."""
    return set(identifying_sources(ds))


@dataclass(frozen=True)
class Leak:
    """A scanner hit: which output element holds the value of which original attributes."""

    where: str  # element path and VR, e.g. "(0008,9215)[0]/(0008,0070) LO"
    tag: int  # the output element's tag
    originals: tuple[str, ...]  # keywords of the original attributes whose value was found

    @property
    def keyword(self) -> str:
        """The output element's keyword, or its ``gggg,eeee`` tag when it has none (private)."""
        return keyword_for_tag(self.tag) or f"{self.tag >> 16:04X},{self.tag & 0xFFFF:04X}"


def find_leaks(ds: Dataset, identifying_values: Iterable[str]) -> list[str]:
    """Where any of ``identifying_values`` occurs (case-insensitive) in any element value of ``ds``,
    public or private, text or binary, at any depth. Each hit names the element path, never the value."""
    return [leak.where for leak in scan_leaks(ds, {v: frozenset() for v in identifying_values})]


def scan_leaks(ds: Dataset, sources: Mapping[str, Iterable[str]]) -> list[Leak]:
    """As :func:`find_leaks`, for ``sources`` (value -> original attribute keywords, as
    :func:`identifying_sources` returns): each hit also names the attributes whose values it holds."""
    owners: dict[str, set[str]] = {}
    for v, keywords in sources.items():
        if len(v.strip()) >= MIN_LEN:
            owners.setdefault(v.strip(), set()).update(keywords)
    forms = {v: _byte_needles({v}) for v in owners}
    needles = {v.upper() for v in owners}
    byte_needles = set().union(*forms.values())
    bulk_needles = set().union(*(f for v, f in forms.items() if len(v) >= BULK_MIN_LEN))
    hits = []
    for where, elem, value in _walk(ds):
        if isinstance(value, (bytes, bytearray)):
            hay = bytes(value).upper()
            bulk = int(elem.tag) in _BULK or (int(elem.tag) & 0xFF01FFFF) == 0x60003000
            if not any(b in hay for b in (bulk_needles if bulk else byte_needles)):
                continue
            found = [v for v in owners if (not bulk or len(v) >= BULK_MIN_LEN) and any(b in hay for b in forms[v])]
        else:
            text = " ".join(_texts(value)).upper()
            if not any(n in text for n in needles):
                continue
            found = [v for v in owners if v.upper() in text]
        originals = tuple(sorted(set().union(*(owners[v] for v in found))))
        hits.append(Leak(f"{where} {_vr(elem)}", int(elem.tag), originals))
    return hits


def _vr(elem: DataElement | RawDataElement) -> str:
    """The element's VR; for an implicit-VR element not parsed yet, the dictionary's."""
    vr = elem.VR
    if vr is None:
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            vr = None
    return vr or "UN"


def _byte_needles(values: set[str]) -> set[bytes]:
    """Values as bytes in the usual encodings, upper-cased as ``bytes.upper`` does (ASCII letters)."""
    return {
        form.encode(enc).upper()
        for v in values
        for form in (v, v.upper(), v.lower())
        for enc in ("utf-8", "latin-1", "utf-16-le")
        if _encodable(form, enc)
    }


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
