#!/usr/bin/env python
"""Cost of the audit log (issue 3, "Tests and figures").

    python bench/bench_audit.py [--appends 2000] [--procs 4] [--per-proc 1000] [--rounds 3] [--dir D] [--json OUT]

Measures, on the file system of ``--dir`` (default: a temporary folder in the system temp dir):

* one append in one process, in microseconds: the whole ``AuditLog.append`` (context, record,
  lock, tail read, write, fsync, the periodic checkpoint every 100 records amortised), and
  its parts: building and hashing the record without I/O, and a bare 700-byte write + fsync;
* appends per second with ``--procs`` writer processes (spawned) appending concurrently to one
  log, each with fsync; afterwards the log must hold exactly procs x per-proc records and verify;
* ``verify_log`` throughput in records per second.

Medians over ``--rounds``. A benchmark, not a test: it prints numbers and exits 0 unless
something breaks. The audited-open ratio is measured by the container benchmark.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from medsec_nb.audit import AuditLog, context, pseudonym, record, verify_log

STUDY = {"container_sha256": "ab" * 32, "study_uid": "1.2.826.0.1.3680043.8.498.4242", "instances": 300}


def _append(log: AuditLog) -> None:
    log.append(
        action="access",
        outcome="success",
        purpose="HRESCH",
        key_id="x25519:00112233445566778899aabbccddeeff",
        study=STUDY,
    )


def per_append_us(folder: Path, n: int) -> float:
    log = AuditLog(folder / "single.jsonl", checkpoint_every=100)
    _append(log)  # creates the file and the checkpoint key outside the timing
    t0 = time.perf_counter()
    for _ in range(n):
        _append(log)
    return (time.perf_counter() - t0) / n * 1e6


def build_only_us(n: int) -> float:
    prev = record.GENESIS
    t0 = time.perf_counter()
    for seq in range(1, n + 1):
        partial = record.fields(
            event="110103",
            action="access",
            outcome="success",
            purpose="HRESCH",
            purpose_text=None,
            key_id="x25519:00112233445566778899aabbccddeeff",
            study=STUDY,
            detail=None,
            who=context.who(),
            where=context.where(),
        )
        rec, _ = record.seal(partial, seq, prev, record.utc_now())
        prev = rec["hash"]
    return (time.perf_counter() - t0) / n * 1e6


def bare_fsync_us(folder: Path, n: int) -> float:
    fd = os.open(folder / "bare.bin", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    line = b"x" * 699 + b"\n"
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, line)
            os.fsync(fd)
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        os.close(fd)


def _writer(path: str, n: int, barrier, out) -> None:
    log = AuditLog(path)
    _append(log)  # warm: imports, key, pseudonym secret
    barrier.wait()
    t0 = time.time()
    for _ in range(n - 1):
        _append(log)
    out.put((t0, time.time()))


def concurrent(folder: Path, procs: int, per_proc: int, tag: str) -> float:
    path = folder / f"concurrent-{tag}.jsonl"
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_writer, args=(str(path), per_proc, barrier, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    spans = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise SystemExit(f"writer failed with exit code {w.exitcode}")
    rep = verify_log(path)
    if not rep.ok or rep.records != procs * per_proc:
        raise SystemExit(f"concurrent log is wrong: {rep.records} records, {rep.message}")
    timed = procs * (per_proc - 1)
    return timed / (max(e for _, e in spans) - min(s for s, _ in spans))


def verify_rate(folder: Path) -> float:
    path = next(folder.glob("concurrent-*.jsonl"))
    t0 = time.perf_counter()
    rep = verify_log(path)
    return rep.records / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appends", type=int, default=2000, help="single-process appends per round")
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--per-proc", type=int, default=1000, help="appends per writer process")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="folder on the file system to measure (default: temp)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the numbers as JSON")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        os.environ["MEDSEC_DATA_DIR"] = str(folder / "data")  # keep the user's real keys and log out of it
        for name in ("MEDSEC_AUDIT_LOG", "MEDSEC_AUDIT_CHECKPOINTS", "MEDSEC_AUDIT_CHECKPOINT_KEY"):
            os.environ.pop(name, None)
        pseudonym("warm-up")
        rows: dict[str, list[float]] = {
            "append_us": [],
            "build_us": [],
            "bare_fsync_us": [],
            "concurrent_appends_per_s": [],
            "verify_records_per_s": [],
        }
        for r in range(args.rounds):
            rows["append_us"].append(per_append_us(folder, args.appends))
            rows["build_us"].append(build_only_us(args.appends))
            rows["bare_fsync_us"].append(bare_fsync_us(folder, args.appends))
            rows["concurrent_appends_per_s"].append(concurrent(folder, args.procs, args.per_proc, str(r)))
            rows["verify_records_per_s"].append(verify_rate(folder))
        med = {k: statistics.median(v) for k, v in rows.items()}

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; folder {args.dir or tempfile.gettempdir()}; medians of {args.rounds}"
    )
    print(f"one append (whole AuditLog.append, fsync, checkpoint every 100): {med['append_us']:8.0f} us")
    print(f"  of which record + hash, no I/O:                               {med['build_us']:8.0f} us")
    print(f"  bare 700-byte write + fsync on this file system:               {med['bare_fsync_us']:8.0f} us")
    print(
        f"{args.procs} concurrent writer processes, fsync per record:          "
        f"{med['concurrent_appends_per_s']:8.0f} appends/s (chain verified, no record lost)"
    )
    print(f"verify_log:{' ' * 53}{med['verify_records_per_s']:8.0f} records/s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "medians": med,
                    "rounds": rows,
                    "procs": args.procs,
                    "per_proc": args.per_proc,
                    "appends": args.appends,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    sys.exit(main())
