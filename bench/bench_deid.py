"""De-identification speed and leaks, medsec-nb next to its peers, measured side by side in one run.

Speed: read + de-identify + write per file divided by pydicom read + write alone, on the same
generated CT files (pydicom's CT_small as template), rounds interleaved, median per row. Rows:
the engine alone (``deidentify``), the full export step (``deidentify_instance``: burned-in check,
de-identification, leak scan of the output, report diff), dicognito and Kitware's dicom-anonymizer.
Leaks: a test set with PHI planted in nested sequences, private tags, an SR content item and the
file's free text; every output of every tool is searched with ``medsec_nb.deid.find_leaks`` for the
original's identifying values (names and parts, IDs, birth date, address, institution, physicians,
operators, accession number). Goal: ratio <= 2.0 and 0 leaks for medsec-nb.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/bench_deid.py [--files 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medsec_nb.deid import DeidKeys, Profile, deidentify, find_leaks, identifying_values
from medsec_nb.deid.export import ExportReport, ExportSettings, deidentify_instance
from medsec_nb.testdata import synthesize_series

KEYS = DeidKeys(b"bench-deid-secret-0123456789abcdef")
PROFILE = Profile()


def _medsec_engine(ds: Dataset) -> Dataset:
    return deidentify(ds, PROFILE, KEYS)


def _medsec_export(ds: Dataset) -> Dataset:
    return deidentify_instance("bench", ds, ExportSettings(PROFILE, KEYS), ExportReport([]))


def _dicognito() -> Callable[[Dataset], Dataset]:
    from dicognito.anonymizer import Anonymizer

    anon = Anonymizer(seed="bench")

    def run(ds: Dataset) -> Dataset:
        anon.anonymize(ds)
        return ds

    return run


def _dicom_anonymizer(ds: Dataset) -> Dataset:
    from dicomanonymizer import anonymize_dataset

    anonymize_dataset(ds, delete_private_tags=True)
    return ds


def _write(ds: Dataset, out: Path) -> None:
    ds.save_as(out, enforce_file_format=False)


def _time_row(files: list[Path], out_dir: Path, fn: Callable[[Dataset], Dataset] | None) -> float:
    start = time.perf_counter()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if fn is not None:
            ds = fn(ds)
        _write(ds, out_dir / f"{i}.dcm")
    return (time.perf_counter() - start) / len(files)


def _planted(template: Path, n: int) -> list[Dataset]:
    """``n`` instances with distinctive PHI in places de-identifiers miss."""
    out = []
    for k in range(n):
        ds = pydicom.dcmread(template)
        name, pid = f"Zelinski^Marta^Q{k:02d}", f"PID-4711-{k:04d}"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, pid, "19580317"
        ds.PatientAddress = "17 Quarry Lane Springfield"
        ds.InstitutionName, ds.OperatorsName = "Saint Wendelin Clinic", "Operatorova^Ida"
        ds.ReferringPhysicianName, ds.AccessionNumber = "Docterman^Hal", f"ACC-99{k:04d}"
        # private block holding name and ID
        block = ds.private_block(0x0029, "ACME PHI", create=True)
        block.add_new(0x10, "LO", name)
        block.add_new(0x11, "LO", pid)
        # nested sequences: a request with accession and requesting physician, an item with
        # institution and operator, and a private tag inside an item
        req = Dataset()
        req.AccessionNumber, req.RequestingPhysician = ds.AccessionNumber, "Requestor^Rita"
        req.RequestedProcedureDescription = f"CT chest for {name.split('^')[0]}"
        inner = Dataset()
        inner.InstitutionName, inner.OperatorsName = ds.InstitutionName, ds.OperatorsName
        inner.PatientID = pid
        iblock = inner.private_block(0x0031, "ACME NESTED", create=True)
        iblock.add_new(0x01, "LO", name)
        req.ReferencedStudySequence = Sequence([inner])
        ds.RequestAttributesSequence = Sequence([req])
        other = Dataset()
        other.PatientID, other.IssuerOfPatientID = pid, "Saint Wendelin Clinic"
        ds.OtherPatientIDsSequence = Sequence([other])
        # an SR-style text content item naming the patient
        item = Dataset()
        item.ValueType = "TEXT"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121073", "DCM", "Impression"
        item.ConceptNameCodeSequence = Sequence([code])
        item.TextValue = f"Discussed with {name.replace('^', ' ')}"
        ds.ContentSequence = Sequence([item])
        ds.ImageComments = f"patient {pid} moved"
        out.append(ds)
    return out


def _leaks(tools: dict[str, Callable[[Dataset], Dataset]], planted: list[Dataset]) -> dict[str, tuple[int, int]]:
    """tool -> (instances with a leak, total hits) on the planted set."""
    result = {}
    for name, fn in tools.items():
        bad = hits = 0
        for ds in planted:
            needles = identifying_values(ds)
            out = fn(copy.deepcopy(ds))
            # round-trip through a file so that what is counted is what a recipient gets
            buf = io.BytesIO()
            out.save_as(buf, enforce_file_format=False)
            found = find_leaks(pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True), needles)
            bad += bool(found)
            hits += len(found)
        result[name] = (bad, hits)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tools: dict[str, Callable[[Dataset], Dataset] | None] = {
        "pydicom read + write (baseline)": None,
        "medsec-nb engine (deidentify)": _medsec_engine,
        "medsec-nb export step (+leak scan, report)": _medsec_export,
        "dicognito 0.19": _dicognito(),
        "dicom-anonymizer 2.1 (Kitware)": _dicom_anonymizer,
    }
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        tmp = Path(tmp)
        files = sorted(synthesize_series(tmp / "src", args.files))
        times: dict[str, list[float]] = {name: [] for name in tools}
        for r in range(args.rounds):
            order = list(tools.items()) if r % 2 == 0 else list(reversed(tools.items()))
            for k, (name, fn) in enumerate(order):
                out = tmp / f"out-{r}-{k}"
                out.mkdir()
                times[name].append(_time_row(files, out, fn))
        base = statistics.median(times["pydicom read + write (baseline)"])
        print(
            f"{args.files} CT files ({pydicom.dcmread(files[0]).Rows}x{pydicom.dcmread(files[0]).Columns}), "
            f"{args.rounds} interleaved rounds, median per file"
        )
        print(f"{'row':<46} {'ms/file':>8} {'ratio':>6}")
        for name in tools:
            med = statistics.median(times[name])
            print(f"{name:<46} {med * 1e3:8.2f} {med / base:6.2f}")
        planted = _planted(files[0], 20)
        leak_tools = {
            k: v for k, v in tools.items() if v is not None and k != "medsec-nb export step (+leak scan, report)"
        }
        print(
            f"\nleaks on {len(planted)} instances with PHI planted in nested sequences, private tags, "
            "a text content item and free text (instances with a leak / element hits):"
        )
        for name, (bad, hits) in _leaks(leak_tools, planted).items():
            print(f"{name:<46} {bad:>3} / {hits}")


if __name__ == "__main__":
    main()
