#!/usr/bin/env python
"""Start-up cost of the ``medsec`` command line (issue 14 item 5, "Fast CLI start").

    python bench/bench_cli.py [--rounds 15] [--wait-quiet 120] [--json OUT.json]

Process start to exit, wall clock, of

* ``medsec --help``,
* ``medsec inspect x.msec`` (a 3-slice container signed by an ed25519 key, built untimed in a
  temporary folder),
* ``python -c "import pydicom"`` (the yardstick named by the issue),
* ``python -c pass`` (information: the interpreter's own start),

each a fresh process with the same interpreter, measured side by side in one run: every round
runs every route once, the order rotating from round to round, after an untimed warm-up round.
Ratio = median over rounds of the per-round ratio of two routes; r(med) = ratio of the medians.
The CPU time other processes used during the rounds is printed with the numbers (``--wait-quiet``
first waits, up to that many seconds, until they use under 0.2 cores).
Goal: median ``medsec --help`` and ``medsec inspect`` under 0.3 s on this machine. A benchmark,
not a test: it prints numbers and exits 0 unless something breaks (``--strict``: 1 when a goal
is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pairs import timed  # bench/pairs.py (the script's folder is on sys.path)

GOAL_S = 0.3
SCRIPT = Path(sys.executable).with_name("medsec")
MEDSEC = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "medsec_nb.cli"]


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall, busy CPU seconds of the whole machine, CPU seconds of this process and its children)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    busy = (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def other_cores(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Cores other processes kept busy on average between snapshots ``a`` and ``b``."""
    return ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0])


def wait_quiet(seconds: float) -> None:
    """Wait until other processes use under 0.2 cores, or ``seconds`` have passed."""
    deadline = time.perf_counter() + seconds
    while True:
        a = cpu_snapshot()
        time.sleep(2.0)
        busy = other_cores(a, cpu_snapshot())
        if busy < 0.2 or time.perf_counter() > deadline:
            print(f"other processes use {busy:.2f} cores; starting", flush=True)
            return


def make_container(folder: Path) -> Path:
    """A small signed container, built in a child process so that this one stays light."""
    code = (
        "import sys\n"
        "from medsec_nb import encrypt_study, generate_identity\n"
        "from medsec_nb.testdata import synthesize_series\n"
        "synthesize_series(sys.argv[1] + '/CT', 3, rows=64, columns=64)\n"
        "encrypt_study(sys.argv[1] + '/CT', sys.argv[1] + '/x.msec', recipients=[generate_identity('x25519').public],\n"
        "              signer=generate_identity('ed25519'), progress=False)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
    return folder / "x.msec"


def route(argv: list[str]) -> Callable[[], object]:
    """Run ``argv`` to its exit; output discarded; a non-zero exit stops the benchmark."""
    return lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def rotating_rounds(routes: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each route in each of ``rounds`` rounds after an untimed warm-up round; the order
    of the routes rotates from round to round."""
    names = list(routes)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 1):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t = timed(routes[name])
            if r:  # round 0 is the warm-up
                out[name].append(t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS", help="wait for a quiet machine first")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the numbers as JSON")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="medsec-bench-cli-") as tmp:
        os.environ["MEDSEC_DATA_DIR"] = str(Path(tmp) / "data")  # keep the user's keys and log out of it
        study = make_container(Path(tmp))
        routes = {
            "medsec --help": route([*MEDSEC, "--help"]),
            "medsec inspect x.msec": route([*MEDSEC, "inspect", str(study)]),
            'python -c "import pydicom"': route([sys.executable, "-c", "import pydicom"]),
            "python -c pass": route([sys.executable, "-c", "pass"]),
        }
        if args.wait_quiet > 0:
            wait_quiet(args.wait_quiet)
        load_start, cpu_start = os.getloadavg(), cpu_snapshot()
        times = rotating_rounds(routes, args.rounds)
        load_end, others = os.getloadavg(), other_cores(cpu_start, cpu_snapshot())

    med = {n: statistics.median(t) for n, t in times.items()}
    print("# medsec CLI start (process start to exit)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.rounds} rounds; load average {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end; other processes used {others:.2f} cores on average during the rounds"
    )
    print(f"\n{'route':28s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for name, t in times.items():
        print(f"{name:28s} {med[name]:7.3f}s {min(t):7.3f}s {max(t):7.3f}s")

    yardstick = 'python -c "import pydicom"'
    rows = []
    print(f"\n{'ratio (paired median; r(med) = ratio of medians)':60s} {'ratio':>7s} {'r(med)':>7s}")
    for name in ("medsec --help", "medsec inspect x.msec"):
        ratio = statistics.median(a / b for a, b in zip(times[name], times[yardstick]))
        rows.append({"route": name, "ratio_to_import_pydicom": ratio, "ratio_of_medians": med[name] / med[yardstick]})
        print(f"{name + ' / ' + yardstick:60s} {ratio:7.3f} {med[name] / med[yardstick]:7.3f}")

    missed = [n for n in ("medsec --help", "medsec inspect x.msec") if med[n] >= GOAL_S]
    print()
    for name in ("medsec --help", "medsec inspect x.msec"):
        print(f"goal: {name} under {GOAL_S} s: median {med[name]:.3f} s -> {'missed' if name in missed else 'met'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "times": times,
                    "medians": med,
                    "ratios": rows,
                    "goal_s": GOAL_S,
                    "loadavg": [load_start, load_end],
                    "other_cores": others,
                },
                indent=1,
            )
            + "\n"
        )
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
