#!/usr/bin/env python
"""Save guard benchmark (issue 5, "In the notebook").

    python bench/bench_save_guard.py [--slices 300] [--series 1] [--rounds 11] [--cells 200]

1. In a kernel (simulated: ``MEDSEC_SAVE_GUARD_PUBLISH=1``; other processes never publish),
   ``open_study`` + ``series[0].volume()`` with the save guard's publication (fingerprints of one
   header per series, on a background thread) against the same with publication switched off
   in this process (bound: ratio <= 1.05, the notebook load bound). The time until the
   fingerprints are published is printed too.
2. The pre-save hook on a notebook of ``--cells`` cells with about 2 KB of text output each (a few
   identifying values among them) against what the server does to save it anyway
   (``nbformat.from_dict`` + ``nbformat.writes``); printed, no bound.

Same process, routes alternated from round to round after an untimed warm-up; each ratio is the
median over rounds of the per-round ratio.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pydicom
from pairs import paired_rounds  # bench/pairs.py (the script's folder is on sys.path)
from pydicom.uid import generate_uid

import medsec_nb
from medsec_nb.saveguard import fingerprints as guard
from medsec_nb.saveguard.hook import SaveGuard
from medsec_nb.testdata import synthesize_series

BOUND = 1.05


def _median_ratio(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    return (
        statistics.median(a / b for a, b in pairs),
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
    )


def bench_open(study: Path, key: Path, rounds: int) -> tuple[list[tuple[float, float]], list[float]]:
    """(guarded, plain) seconds per round for open_study + volume(); and the wait for publication."""
    publish = guard.publish
    published: list[float] = []
    opened: list[medsec_nb.Study] = []

    def guarded() -> None:
        st = medsec_nb.open_study(study, identity=key, purpose="HRESCH")
        st.series[0].volume(progress=False)
        opened.append(st)

    def plain() -> None:
        guard.publish = lambda study: None
        try:
            st = medsec_nb.open_study(study, identity=key, purpose="HRESCH")
            st.series[0].volume(progress=False)
            opened.append(st)
        finally:
            guard.publish = publish

    def settle(name: str) -> None:  # untimed: wait for the publication, then close
        st = opened.pop()
        if name == "a":  # guarded
            t = time.perf_counter()
            assert guard.wait(st)
            published.append(time.perf_counter() - t)
        st.close()

    return paired_rounds(guarded, plain, rounds, after=settle), published[1:]


def _notebook(cells: int, name: str, pid: str) -> dict:
    filler = "slice 12 mean -734.2 HU, std 211.9; window 1500/-600; spacing 0.7 x 0.7 x 1.25 mm\n" * 24
    nb = nbformat.v4.new_notebook()
    for k in range(cells):
        text = filler + (f"patient {name} id {pid}\n" if k % 20 == 0 else "")
        cell = nbformat.v4.new_code_cell(f"print(stats[{k}])")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    return nb


def bench_hook(cells: int, rounds: int, name: str, pid: str) -> list[tuple[float, float]]:
    hook = SaveGuard()
    base = dict(_notebook(cells, name, pid))
    models: dict[str, dict] = {}

    def fresh(route: str) -> None:  # untimed: each run works on its own copy
        models[route] = {"type": "notebook", "content": copy.deepcopy(base)}

    def guard_it() -> None:
        hook.pre_save(model=models["a"], path="bench.ipynb")

    def save_it() -> None:
        nbformat.writes(nbformat.from_dict(models["b"]["content"]))

    fresh("a"), fresh("b")
    return paired_rounds(guard_it, save_it, rounds, after=fresh)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--series", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--cells", type=int, default=200)
    args = ap.parse_args(argv)
    os.environ["MEDSEC_SAVE_GUARD_PUBLISH"] = "1"  # publish as a kernel does (this is not one)
    with tempfile.TemporaryDirectory(prefix="medsec-bench-guard-") as tmp:
        tmp = Path(tmp)
        os.environ["MEDSEC_DATA_DIR"] = str(tmp / "data")
        os.environ["MEDSEC_AUDIT_CHECKPOINT_EVERY"] = "0"
        os.environ.pop("MEDSEC_AUDIT_LOG", None)
        per = max(1, args.slices // args.series)
        study_uid = None
        for s in range(args.series):
            files = synthesize_series(tmp / "src" / f"s{s}", per, rows=512, columns=512)
            series_uid = generate_uid()
            for f in files:
                ds = pydicom.dcmread(f)
                study_uid = study_uid or ds.StudyInstanceUID
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, series_uid, s + 1
                ds.save_as(f)
        src = pydicom.dcmread(files[0])
        ident = medsec_nb.generate_identity("x25519")
        key, _ = medsec_nb.save_identity(ident, tmp / "analyst")
        study = tmp / "ct.msec"
        medsec_nb.encrypt_study(tmp / "src", study, recipients=[ident.public], progress=False)
        print(
            f"{args.series} series x {per} slices of 512x512; {args.rounds} rounds; Python {sys.version.split()[0]}; "
            f"{os.cpu_count()} CPUs (shared with other jobs)"
        )
        pairs, published = bench_open(study, key, args.rounds)
        ratio, a, b = _median_ratio(pairs)
        print(
            f"open_study + volume() with save guard publication vs without: {a * 1e3:.1f} ms vs {b * 1e3:.1f} ms; "
            f"median ratio {ratio:.3f}, bound {BOUND} -> {'PASS' if ratio <= BOUND else 'FAIL'}; "
            f"fingerprints published {statistics.median(published) * 1e3:.1f} ms after volume() returned (median)"
        )
        st = medsec_nb.open_study(study, identity=key, purpose="HRESCH")
        guard.wait(st)
        pairs = bench_hook(args.cells, args.rounds, str(src.PatientName), src.PatientID)
        ratio, a, b = _median_ratio(pairs)
        size = len(nbformat.writes(nbformat.from_dict(_notebook(args.cells, "x", "y")))) / 1e6
        print(
            f"pre-save hook on a {size:.1f} MB notebook ({args.cells} cells) vs nbformat from_dict + writes: "
            f"{a * 1e3:.1f} ms vs {b * 1e3:.1f} ms; median ratio {ratio:.2f} (no bound)"
        )
        st.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
