"""The shipped PS3.15 Annex E tables (Table E.1-1 2024b; Tables E.3.10-1 and E.3.4-1 2023b) and their lookup."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydicom.tag import BaseTag, Tag

EDITION = "2024b"

#: The ten option columns of Table E.1-1, by the option names used in :class:`Profile`.
OPTION_COLUMNS: dict[str, str] = {
    "retain-safe-private": "retain_safe_private",
    "retain-uids": "retain_uids",
    "retain-device-identity": "retain_device_identity",
    "retain-institution-identity": "retain_institution_identity",
    "retain-patient-characteristics": "retain_patient_characteristics",
    "retain-long-full-dates": "retain_long_full_dates",
    "retain-long-modified-dates": "retain_long_modified_dates",
    "clean-descriptors": "clean_descriptors",
    "clean-structured-content": "clean_structured_content",
    "clean-graphics": "clean_graphics",
}

CURVE_ROW = "50XX,XXXX"


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1; ``options`` maps an option name to its non-empty code."""

    tag: str
    keyword: str
    name: str
    vr: str
    retired: str
    in_std_iod: str
    basic: str
    options: dict[str, str]


DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "ps315"


def _read(name: str) -> str:
    return (DATA_DIR / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def rows() -> tuple[Row, ...]:
    """Every row of the shipped Table E.1-1, in table order."""
    out = []
    for r in csv.DictReader(io.StringIO(_read("table_e1_1.csv"))):
        opts = {name: r[col] for name, col in OPTION_COLUMNS.items() if r[col]}
        out.append(
            Row(
                r["tag"],
                r["keyword"],
                r["name"],
                r["vr"],
                r["retired_in_dictionary"],
                r["in_std_composite_iod"],
                r["basic_profile_action"],
                opts,
            )
        )
    return tuple(out)


@lru_cache(maxsize=1)
def _index() -> tuple[dict[int, Row], dict[str, Row]]:
    exact: dict[int, Row] = {}
    special: dict[str, Row] = {}
    for row in rows():
        if "X" in row.tag.upper() or row.tag.startswith("GGGG"):
            special[row.tag] = row
        else:
            exact[int(row.tag.replace(",", ""), 16)] = row
    return exact, special


def lookup(tag: int | BaseTag) -> Row | None:
    """The Table E.1-1 row governing a public ``tag`` (group rules included), or None if unlisted.

    Private tags are governed by the row ``GGGG,EEEE (GGGG odd)`` and :func:`is_safe_private` instead.
    """
    tag = Tag(tag)
    exact, special = _index()
    row = exact.get(int(tag))
    if row is not None:
        return row
    group, elem = tag.group, tag.element
    if 0x5000 <= group <= 0x501E and group % 2 == 0:
        return special[CURVE_ROW]
    if 0x6000 <= group <= 0x601E and group % 2 == 0 and elem in (0x3000, 0x4000):
        return special[f"60XX,{elem:04X}"]
    return None


@lru_cache(maxsize=1)
def safe_private() -> frozenset[tuple[int, str, int]]:
    """Table E.3.10-1 as (group, private creator, element low byte) triples."""
    out = set()
    for r in csv.DictReader(io.StringIO(_read("table_e3_10_1_safe_private.csv"))):
        group, elem = r["Data Element"].strip("() ").split(",")
        out.add((int(group, 16), r["Private Creator"].strip(), int(elem[-2:], 16)))
    return frozenset(out)


def is_safe_private(tag: int | BaseTag, creator: str) -> bool:
    """Whether private ``tag`` in the block reserved by ``creator`` is listed in Table E.3.10-1."""
    tag = Tag(tag)
    return (tag.group, creator.strip(), tag.element & 0xFF) in safe_private()


@lru_cache(maxsize=1)
def action_codes() -> dict[str, str]:
    """Table E.1-1a: action code to its meaning."""
    return {code: meaning for code, meaning in csv.reader(io.StringIO(_read("table_e1_1a_action_codes.csv")))}


#: The option columns of Table E.3.4-1, by option name (it has no Safe Private, Clean Structured
#: Content or Clean Graphics column).
CSC_OPTION_COLUMNS: dict[str, str] = {
    "retain-uids": "Rtn. UIDs Opt.",
    "retain-device-identity": "Rtn. Dev. Id. Opt.",
    "retain-institution-identity": "Rtn. Inst. Id. Opt.",
    "retain-patient-characteristics": "Rtn. Pat. Chars. Opt.",
    "retain-long-full-dates": "Rtn. Long. Full Dates Opt.",
    "retain-long-modified-dates": "Rtn. Long. Modif. Dates Opt.",
    "clean-descriptors": "Clean Desc. Opt.",
}


@dataclass(frozen=True)
class ContentRow:
    """One row of Table E.3.4-1 (a content item concept name and its actions)."""

    meaning: str
    value: str
    scheme: str
    value_type: str
    basic: str
    options: dict[str, str]


@lru_cache(maxsize=1)
def structured_content() -> dict[tuple[str, str], tuple[ContentRow, ...]]:
    """Table E.3.4-1 by (coding scheme designator, code value); a few codes have one row per value type."""
    out: dict[tuple[str, str], list[ContentRow]] = {}
    for r in csv.DictReader(io.StringIO(_read("table_e3_4_1_clean_structured_content.csv"))):
        opts = {name: r[col] for name, col in CSC_OPTION_COLUMNS.items() if r[col]}
        row = ContentRow(
            r["Code Meaning"], r["Code Value"], r["Coding Scheme Designator"], r["Value Type"], r["Basic Prof."], opts
        )
        out.setdefault((row.scheme, row.value), []).append(row)
    return {k: tuple(v) for k, v in out.items()}


def content_row(scheme: str, value: str, value_type: str) -> ContentRow | None:
    """The Table E.3.4-1 row for a content item's concept name (and value type, when a code has several)."""
    found = structured_content().get((scheme.strip(), value.strip()))
    if not found:
        return None
    return next((r for r in found if r.value_type == value_type.strip()), found[0])
