"""Saved notebooks must not carry identifying values of the demo data.

The notebooks in ``notebooks/`` run on pydicom's bundled test files. Those files contain
(fake) patient names, IDs and birth dates, and a notebook that prints a header or a raw
byte dump would store them in its outputs, in the repository and in the HTML export.
This test reads the identifiers from the files at test time and scans every saved notebook
(sources and stored outputs) and its HTML export in ``docs/`` for them.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file, get_testdata_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
DOCS_DIR = ROOT / "docs"

# Files the notebooks read directly (every identifier in them is checked, also name parts).
DEMO_FILES = ["CT_small.dcm", "MR_small.dcm", "OBXXXX1A_rle_2frame.dcm"]
# Fake names known to be in pydicom's bundled files; checked even if a file goes missing.
KNOWN_FAKE_NAMES = [
    "CompressedSamples^CT1",
    "CompressedSamples^MR1",
    "CompressedSamples^NM1",
    "CompressedSamples^US1",
    "Lestrade^G",
    "Doe^Peter",
    "Doe^Archibald",
    "Citizen^Jan",
]
# Placeholder values that carry no identity and occur in ordinary prose.
GENERIC = {"anonymized", "anonymised", "anonymous", "unknown", "none", "test", "patient"}
MIN_LEN = 4  # shorter values (e.g. an ID "204") are too common to scan for without false alarms
MIN_DIGITS = 5  # all-digit values need more: "0010" (a real Patient ID in the bundle) is also a DICOM group
PATIENT_KEYWORDS = {
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "PatientBirthDate",
}

# mime types whose payload is base64 image data: random text that cannot be scanned meaningfully
BINARY_MIME = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _add(values: set[str], raw) -> None:
    if raw is None:
        return
    text = str(raw).strip().strip("\x00").strip()
    if not text:
        return
    alnum = re.sub(r"[^0-9A-Za-z]", "", text)
    if len(alnum) < MIN_LEN or text.lower() in GENERIC:
        return
    if re.fullmatch(r"[\d\-./]+", text) and len(alnum) < MIN_DIGITS:
        return
    values.add(text)


def _identifiers_of(ds, values: set[str], demo_file: bool) -> None:
    """Patient identifiers of a dataset; for a file the notebooks use, every person name and its parts."""
    for elem in ds.iterall():  # includes nested sequences (e.g. Other Patient IDs Sequence)
        keyword = elem.keyword or ""
        if elem.VR == "PN" and elem.value and (demo_file or keyword in PATIENT_KEYWORDS):
            items = elem.value if elem.VM > 1 else [elem.value]
            for pn in items:
                text = str(pn)
                _add(values, text)
                _add(values, text.replace("^", " ").strip())
                if demo_file:
                    for part in re.split(r"[\^=]", text):
                        _add(values, part)
        elif keyword in PATIENT_KEYWORDS:
            items = elem.value if elem.VM > 1 else [elem.value]
            for v in items:
                _add(values, v)
                if keyword == "PatientBirthDate" and re.fullmatch(r"\d{8}", str(v)):
                    v = str(v)
                    _add(values, f"{v[:4]}-{v[4:6]}-{v[6:]}")


def collect_identifiers() -> list[str]:
    values: set[str] = set()
    for name in KNOWN_FAKE_NAMES:
        _add(values, name)
        _add(values, name.replace("^", " "))
    for name in DEMO_FILES:
        path = get_testdata_file(name)
        assert path is not None, f"pydicom test file {name} not found"
        _identifiers_of(pydicom.dcmread(path, stop_before_pixels=True), values, demo_file=True)
    for path in get_testdata_files():  # every other bundled file: patient identifiers, whole values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # many bundled files are deliberately malformed
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                _identifiers_of(ds, values, demo_file=False)
            except Exception:
                continue
    return sorted(values)


def _pattern(value: str) -> re.Pattern:
    escaped = re.escape(value)
    if re.fullmatch(r"[0-9A-Fa-f\-]+", value):
        # Digits (IDs, dates) and hex-like values also occur by chance inside hashes and numbers:
        # only match them as whole tokens.
        return re.compile(rf"(?<![0-9A-Za-z]){escaped}(?![0-9A-Za-z])", re.IGNORECASE)
    return re.compile(escaped, re.IGNORECASE)


def find_leaks(text: str, identifiers: list[str]) -> list[str]:
    # "\x00642341" in a bytes repr: turn escape sequences into separators first.
    normalised = re.sub(r"\\x[0-9a-fA-F]{2}|\\[nrt0]", " ", text)
    lowered = text.lower()
    found = []
    for value in identifiers:
        if _pattern(value).search(normalised):
            found.append(value)
        elif value.encode().hex() in lowered:  # a hex dump of the raw header
            found.append(f"{value} (as hex)")
    return found


def notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = [json.dumps(nb.get("metadata", {}))]
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        parts.append("".join(src) if isinstance(src, list) else src)
        for out in cell.get("outputs", []):
            for key in ("text", "ename", "evalue"):
                if key in out:
                    v = out[key]
                    parts.append("".join(v) if isinstance(v, list) else str(v))
            parts.extend(out.get("traceback", []))
            for mime, v in out.get("data", {}).items():
                if mime in BINARY_MIME:
                    continue
                parts.append("".join(v) if isinstance(v, list) else json.dumps(v))
    return "\n".join(parts)


def html_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return re.sub(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=\s]+", "data:image;base64,", text)


NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb"))
EXPORTS = sorted(DOCS_DIR / f"{p.stem}.html" for p in NOTEBOOKS if (DOCS_DIR / f"{p.stem}.html").exists())


@pytest.fixture(scope="module")
def identifiers() -> list[str]:
    return collect_identifiers()


def test_there_are_notebooks_to_scan():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_identifiers_are_read_from_the_demo_data(identifiers):
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert str(ct.PatientName) in identifiers
    assert str(ct.PatientID) in identifiers
    assert "CompressedSamples" in identifiers  # name part of the file the notebooks use
    assert "Lestrade^G" in identifiers


def test_scanner_finds_planted_values(identifiers):
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    name, pid = str(ct.PatientName), str(ct.PatientID)
    assert find_leaks(f"Patient: {name}", identifiers)
    assert find_leaks(repr(b"\x00\x10" + pid.encode() + b"\x00"), identifiers)
    assert find_leaks(name.encode().hex(), identifiers)
    assert find_leaks("mrn=642341;", ["642341"])
    assert find_leaks(repr(b"\x00642341"), ["642341"])
    # digits inside a longer hash or number are not a leak
    assert not find_leaks("sha256 a9f642341b0c", ["642341"])
    assert not find_leaks("sha256 4836132a73c3 recovered 5 of 5", identifiers)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_notebook_has_no_identifiers(path, identifiers):
    leaks = find_leaks(notebook_text(path), identifiers)
    assert not leaks, f"{path.name} contains identifying values of the demo data: {leaks}"


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_html_export_has_no_identifiers(path, identifiers):
    leaks = find_leaks(html_text(path), identifiers)
    assert not leaks, f"{path.name} contains identifying values of the demo data: {leaks}"
