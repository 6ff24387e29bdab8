#!/usr/bin/env python
"""Cohort path (issue 8, "Tests and figures").

    python bench/bench_cohort.py [--studies 50] [--slices 60] [--size 512] [--rounds 5] [--dir D] [--json OUT]

Generates ``--studies`` encrypted studies (``synthesize_series`` + ``encrypt_study``, X25519
recipient), then measures side by side, in one run, alternating, medians over ``--rounds``:

* ``plain``: a loop of ``open_study(..., threads=1)`` + ``measure(study)`` in this process: the
  same work as one cohort task, which decrypts on one thread (Dask's one core per worker thread);
* ``plain-2t``: the same loop with the default two decrypting threads (information);
* ``plain-x2``: two processes each running the plain loop on half the studies at the same time,
  no Dask and no client work (information: how far two processes scale on this machine, the
  ceiling for the 2-worker / 1-worker ratio);
* ``cohort-1``: ``Cohort.map(measure)`` on the cohort's own LocalCluster
  (``Cohort.from_glob(..., n_workers=1)``: one single-threaded worker process, as a user gets it);
* ``cohort-2``: the same with 2 worker processes.

Each cohort row starts its cluster, runs one untimed map (worker imports, checks the values)
and then the timed one, and closes the cluster, so no idle cluster runs beside a timed one.

``measure`` decrypts the series volume and computes a lung-like volume (voxels in [-950, -400] HU
). Reported: throughput ratio cohort-2 / cohort-1 (goal >= 1.7) and the
per-study overhead ratio cohort-1 / plain (goal <= 1.10). Cluster start-up is outside the timing;
the cohort timing includes the client-side key grants and every forwarded audit record.
A benchmark, not a test: it prints numbers and exits 0 unless something breaks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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


def _half(paths: list[Path], key: Path, log: Path, barrier, out) -> None:
    """One of the two ``plain-x2`` processes: warm up, wait for the other, run, report (start, end)."""
    me = medsec_nb.load_identity(key)
    run_plain(paths, me, AuditLog(log))
    barrier.wait()
    t0 = time.time()
    run_plain(paths, me, AuditLog(log))
    out.put((t0, time.time()))


def run_plain_x2(paths: list[Path], key: Path, log: Path) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    half = len(paths) // 2
    procs = [ctx.Process(target=_half, args=(part, key, log, barrier, out)) for part in (paths[:half], paths[half:])]
    for p in procs:
        p.start()
    spans = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return max(e for _, e in spans) - min(s for s, _ in spans)


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

    with tempfile.TemporaryDirectory(dir=a.dir, prefix="bench-cohort-") as tmp:
        folder = Path(tmp)
        me = medsec_nb.generate_identity("x25519")
        t0 = time.perf_counter()
        paths = build(folder, a.studies, a.slices, a.size, me)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"{a.studies} studies x {a.slices} slices {a.size}x{a.size} int16, {mb:.0f} MB encrypted "
            f"(built in {time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        log = AuditLog(folder / "audit.jsonl")
        expected = run_plain(paths, me, log)[1]  # warm the page cache and imports

        def cohort_round(n: int) -> float:
            with Cohort.from_glob(
                str(folder / "study*.msec"), identity=me, purpose="HRESCH", n_workers=n, audit_log=log
            ) as co:
                assert np.allclose(run_cohort(co)[1], expected)  # untimed: worker imports, page cache
                return run_cohort(co)[0]

        key = medsec_nb.save_identity(me, folder / "bench-identity")[0]
        times: dict[str, list[float]] = {"plain": [], "plain-2t": [], "plain-x2": [], "cohort-1": [], "cohort-2": []}
        for r in range(a.rounds):
            order = list(times) if r % 2 == 0 else list(reversed(times))
            for name in order:
                if name == "plain-x2":
                    dt = run_plain_x2(paths, key, log.path)
                elif name.startswith("plain"):
                    dt = run_plain(paths, me, log, None if name == "plain-2t" else 1)[0]
                else:
                    dt = cohort_round(int(name[-1]))
                times[name].append(dt)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        res = {
            "studies": a.studies,
            "slices": a.slices,
            "size": a.size,
            "rounds": a.rounds,
            "mb": round(mb, 1),
            "seconds": {k: round(v, 3) for k, v in med.items()},
            "ms_per_study": {k: round(v / a.studies * 1000, 2) for k, v in med.items()},
            "throughput_2_vs_1_workers": round(med["cohort-1"] / med["cohort-2"], 3),
            "overhead_cohort1_vs_plain": round(med["cohort-1"] / med["plain"], 3),
            "cohort1_vs_plain_2_threads": round(med["cohort-1"] / med["plain-2t"], 3),
            "plain_two_processes_vs_one": round(med["plain"] / med["plain-x2"], 3),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load": os.getloadavg(),
        }
        print(
            f"plain open_study loop: {res['ms_per_study']['plain']} ms/study (with 2 decrypting threads: "
            f"{res['ms_per_study']['plain-2t']}); cohort 1 worker: "
            f"{res['ms_per_study']['cohort-1']} ms/study; cohort 2 workers: {res['ms_per_study']['cohort-2']} ms/study"
        )
        print(
            f"throughput 2 workers / 1 worker: {res['throughput_2_vs_1_workers']:.2f}x (goal >= 1.7); "
            f"two plain processes / one: {res['plain_two_processes_vs_one']:.2f}x (this machine's ceiling)"
        )
        print(
            f"per-study overhead, cohort on 1 worker / plain loop: {res['overhead_cohort1_vs_plain']:.2f} "
            f"(goal <= 1.10); "
            f"against the plain loop with 2 decrypting threads: {res['cohort1_vs_plain_2_threads']:.2f}"
        )
        print(f"load average during the run: {res['load']}")
        if a.json:
            a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
