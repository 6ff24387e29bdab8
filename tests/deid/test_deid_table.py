"""The shipped PS3.15 tables: complete, well-formed, equal to the team reference when present."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pydicom.datadict import keyword_for_tag

from medsec_nb.deid import table

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "dicom-ps3.15"
SHIPPED = table.DATA_DIR / "table_e1_1.csv"


def test_every_row_shipped_with_valid_codes():
    rows = table.rows()
    assert len(rows) == 621
    assert len({r.tag for r in rows}) == len(rows)
    codes = set(table.action_codes())
    assert len(codes) == 11
    for r in rows:
        assert r.basic in codes, r.tag
        assert set(r.options.values()) <= {"K", "C"}, r.tag
    assert len(table.safe_private()) == 479


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared reference folder absent")
def test_shipped_table_equals_reference():
    with open(REFERENCE / "ps315_table_e1_1.csv", newline="", encoding="utf-8") as f:
        reference = list(csv.reader(f))
    with open(SHIPPED, newline="", encoding="utf-8") as f:
        shipped = list(csv.reader(f))
    assert shipped == reference


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared reference folder absent")
@pytest.mark.parametrize(
    "shipped, reference",
    [
        ("table_e3_4_1_clean_structured_content.csv", "ps315_2023b_table_e3_4_1_clean_structured_content_codes.csv"),
        ("table_e3_10_1_safe_private.csv", "ps315_2023b_table_e3_10_1_safe_private.csv"),
    ],
)
def test_shipped_2023b_tables_equal_reference(shipped, reference):
    with open(REFERENCE / reference, newline="", encoding="utf-8") as f:
        expected = list(csv.reader(f))
    with open(table.DATA_DIR / shipped, newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == expected


def test_keywords_agree_with_pydicom_dictionary():
    checked = 0
    for r in table.rows():
        if not r.keyword or "X" in r.tag.upper():
            continue
        known = keyword_for_tag(int(r.tag.replace(",", ""), 16))
        if known:
            assert known == r.keyword, r.tag
            checked += 1
    assert checked > 550


@pytest.mark.parametrize(
    "tag, expected",
    [
        (0x00100010, "0010,0010"),
        (0x60023000, "60XX,3000"),
        (0x601E4000, "60XX,4000"),
        (0x50100030, "50XX,XXXX"),
        (0x60020010, None),
        (0x00280010, None),
    ],
)
def test_lookup_group_rules(tag, expected):
    row = table.lookup(tag)
    assert (row.tag if row else None) == expected


def test_safe_private_match_needs_creator_and_element():
    group, creator, elem = next(iter(sorted(table.safe_private())))
    assert table.is_safe_private((group << 16) | 0x1000 | elem, creator)
    assert table.is_safe_private((group << 16) | 0x1200 | elem, f" {creator} ")
    assert not table.is_safe_private((group << 16) | 0x1000 | elem, creator + "X")
