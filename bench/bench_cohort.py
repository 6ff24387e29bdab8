#!/usr/bin/env python
"""Cohort path (issue 8, "Tests and figures").

    python bench/bench_cohort.py [--studies 50] [--slices 60] [--size 512] [--rounds 5] [--dir D] [--json OUT]

Generates ``--studies`` encrypted studies (``synthesize_series`` + ``encrypt_study``, X25519
recipient), then measures side by side, in one run, alternating, medians over ``--rounds``:

* ``plain``: a loop of ``open_study(..., threads=1)`` + ``measure(study)`` in this process: the
  same work as one cohort task, which decrypts on one thread (Dask's one core per worker thread);
* ``plain-2t``: the same loop with the default two decrypting threads (information);
* ``cohort-1``: ``Cohort.map(measure)`` on a LocalCluster with 1 single-threaded worker process;
* ``cohort-2``: the same with 2 worker processes.

``measure`` decrypts the series volume and computes a lung-like volume (voxels in [-950, -400] HU
). Reported: throughput ratio cohort-2 / cohort-1 (goal >= 1.7) and the
per-study overhead ratio cohort-1 / plain (goal <= 1.10). Cluster start-up is outside the timing;
the cohort timing includes the client-side key grants and every forwarded audit record.
A benchmark, not a test: it prints numbers and exits 0 unless something breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import medsec_nb
from medsec_nb.audit import AuditLog
from medsec_nb.cohort import Cohort
from medsec_nb.testdata import synthesize_series


def measure(study) -> float:
    """Voxels in [-950, -400] HU (a stand-in for a lung volume measurement)."""
    vol = study.series[0].volume()
    return float(np.count_nonzero((vol >= -950) & (vol <= -400)))


def build(folder: Path, n: int, slices: int, size: int, me) -> list[Path]:
    paths = []
    for i in range(n):
        src = folder / f"src{i:03d}"
        synthesize_series(src, n_slices=slices, rows=size, columns=size)
        p = folder / f"study{i:03d}.msec"
        medsec_nb.encrypt_study(src, p, recipients=[me.public])
        for f in src.iterdir():
            f.unlink()
        src.rmdir()
        paths.append(p)
    return paths


def run_plain(paths: list[Path], me, log: AuditLog, threads: int | None = 1) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    out = []
    for p in paths:
        with medsec_nb.open_study(p, identity=me, purpose="HRESCH", audit_log=log, threads=threads) as s:
            out.append(measure(s))
    return time.perf_counter() - t0, out


def run_cohort(cohort: Cohort) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    r = cohort.map(measure, progress=False)
    dt = time.perf_counter() - t0
    if r.errors:
        raise SystemExit(f"cohort errors: {r.errors}")
    return dt, r.values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--slices", type=int, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(dir=a.dir, prefix="bench-cohort-") as tmp:
        folder = Path(tmp)
        me = medsec_nb.generate_identity("x25519")
        t0 = time.perf_counter()
        paths = build(folder, a.studies, a.slices, a.size, me)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{a.studies} studies x {a.slices} slices {a.size}x{a.size} int16, {mb:.0f} MB encrypted "
              f"(built in {time.perf_counter() - t0:.1f} s)", flush=True)
        log = AuditLog(folder / "audit.jsonl")
        clusters = {}
        try:
            for n in (1, 2):
                cl = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
                client = Client(cl)
                clusters[n] = (cl, client, Cohort.from_glob(str(folder / "study*.msec"), identity=me, purpose="HRESCH",
                                                            client=client, audit_log=log))
            expected = run_plain(paths, me, log)[1]                    # warm the page cache and imports
            for n in (1, 2):
                assert np.allclose(run_cohort(clusters[n][2])[1], expected)
            times: dict[str, list[float]] = {"plain": [], "plain-2t": [], "cohort-1": [], "cohort-2": []}
            for r in range(a.rounds):
                order = list(times) if r % 2 == 0 else list(reversed(times))
                for name in order:
                    if name.startswith("plain"):
                        dt = run_plain(paths, me, log, None if name == "plain-2t" else 1)[0]
                    else:
                        dt = run_cohort(clusters[int(name[-1])][2])[0]
                    times[name].append(dt)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        finally:
            for cl, client, co in clusters.values():
                co.close()
                client.close()
                cl.close()
        med = {k: statistics.median(v) for k, v in times.items()}
        res = {
            "studies": a.studies, "slices": a.slices, "size": a.size, "rounds": a.rounds, "mb": round(mb, 1),
            "seconds": {k: round(v, 3) for k, v in med.items()},
            "ms_per_study": {k: round(v / a.studies * 1000, 2) for k, v in med.items()},
            "throughput_2_vs_1_workers": round(med["cohort-1"] / med["cohort-2"], 3),
            "overhead_cohort1_vs_plain": round(med["cohort-1"] / med["plain"], 3),
            "cohort1_vs_plain_2_threads": round(med["cohort-1"] / med["plain-2t"], 3),
            "cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg(),
        }
        print(f"plain open_study loop: {res['ms_per_study']['plain']} ms/study (with 2 decrypting threads: "
              f"{res['ms_per_study']['plain-2t']}); cohort 1 worker: "
              f"{res['ms_per_study']['cohort-1']} ms/study; cohort 2 workers: {res['ms_per_study']['cohort-2']} ms/study")
        print(f"throughput 2 workers / 1 worker: {res['throughput_2_vs_1_workers']:.2f}x (goal >= 1.7)")
        print(f"per-study overhead, cohort on 1 worker / plain loop: {res['overhead_cohort1_vs_plain']:.2f} "
              f"(goal <= 1.10); "
              f"against the plain loop with 2 decrypting threads: {res['cohort1_vs_plain_2_threads']:.2f}")
        print(f"load average during the run: {res['load']}")
        if a.json:
            a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
