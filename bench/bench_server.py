#!/usr/bin/env python
"""Lab-extension benchmark (issue 7, "Performance").

    python bench/bench_server.py [--records 100000] [--rounds 15] [--loads 40]

1. The newest page of 100 audit rows (``audit.page.read_page`` and the row conversion the
   ``GET /medsec/audit`` handler does) from a 100,000-record log against the same from a
   100-record log (bound: ratio <= 1.5). Both logs hold real, chained records.
2. ``%load_secure_study`` (and ``%unload_secure_study``) of the demo study in a real kernel,
   with a Jupyter server running the extension in both cases, while the panel is open
   (a client requests ``/medsec/studies`` every 3 s and ``/medsec/audit`` every 2 s, as the
   panel does, at phases independent of the loads) against while it is closed (no requests)
   (bound: ratio <= 1.02). The time (mean of three load/unload pairs in one cell) is measured
   inside the kernel; each cell starts after a
   random pause so that it meets the panel's requests at random phases.

Routes alternate from round to round after an untimed warm-up; each ratio is the median of
the per-round ratios. Exits 0 unless something breaks (``--strict``: 1 when a bound fails).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

BOUNDS = {"page": 1.5, "load": 1.02}


def write_log(path: Path, n: int) -> None:
    """``n`` chained version-1 records, as AuditLog.append writes them (without an fsync each)."""
    from medsec_nb.audit import context, record

    prev = record.GENESIS
    with open(path, "wb") as fh:
        for seq in range(1, n + 1):
            partial = record.fields(
                event="110103",
                action="open",
                outcome="success",
                purpose="HRESCH",
                purpose_text=None,
                key_id="x25519:0123456789abcdef",
                study={"container_sha256": "ab" * 32, "instances": 24},
                detail={"n": seq},
                who=context.who(),
                where=context.where(),
            )
            rec, line = record.seal(partial, seq, prev, record.utc_now())
            prev = rec["hash"]
            fh.write(line)


def bench_page(records: int, rounds: int) -> float:
    from medsec_nb.audit.page import read_page
    from medsec_nb.server.views import page_json

    with tempfile.TemporaryDirectory(prefix="medsec-bench-page-") as tmp:
        big, small = Path(tmp) / "big.jsonl", Path(tmp) / "small.jsonl"
        write_log(big, records)
        write_log(small, 100)
        print(
            f"logs: {records} records ({big.stat().st_size / 1e6:.1f} MB) and 100 records "
            f"({small.stat().st_size / 1e3:.0f} kB)"
        )

        def one(path: Path) -> float:
            t = time.perf_counter()
            for _ in range(20):
                out = page_json(read_page(path, limit=100))
            dt = (time.perf_counter() - t) / 20
            assert len(out["records"]) == 100
            return dt

        one(big), one(small)
        ratios, tb, ts = [], [], []
        for r in range(rounds):
            pair = (one(big), one(small)) if r % 2 == 0 else tuple(reversed((one(small), one(big))))
            tb.append(pair[0])
            ts.append(pair[1])
            ratios.append(pair[0] / pair[1])
    ratio = statistics.median(ratios)
    print(
        f"[1] newest page of 100: {statistics.median(tb) * 1e3:.2f} ms from {records} records, "
        f"{statistics.median(ts) * 1e3:.2f} ms from 100 records: ratio {ratio:.3f} (bound {BOUNDS['page']})"
    )
    return ratio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Panel(threading.Thread):
    """Requests the panel's endpoints at the panel's rates while ``active`` is set."""

    RATES: ClassVar[dict[str, float]] = {"medsec/studies": 3.0, "medsec/audit?limit=100": 2.0}

    def __init__(self, base: str, token: str):
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.active, self.stop, self.calls = threading.Event(), threading.Event(), 0

    def get(self, path: str) -> None:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            json.loads(r.read())
        self.calls += 1

    def run(self) -> None:
        due = {path: 0.0 for path in self.RATES}
        while not self.stop.wait(0.05):
            if not self.active.is_set():
                continue
            now = time.monotonic()
            for path, every in self.RATES.items():
                if now >= due[path]:
                    self.get(path)
                    due[path] = now + every


def bench_load(loads: int) -> float:
    from jupyter_client.manager import start_new_kernel

    from medsec_nb.cli.demo import build_demo

    tmp = Path(tempfile.mkdtemp(prefix="medsec-bench-lab-"))
    env = dict(
        os.environ,
        MEDSEC_DATA_DIR=str(tmp / "data"),
        MEDSEC_AUDIT_LOG=str(tmp / "audit.jsonl"),
        MEDSEC_AUDIT_CHECKPOINT_EVERY="0",
    )
    os.environ.update(env)
    study, key, _ = build_demo(tmp / "demo")
    port, token = _free_port(), "bench-" + os.urandom(8).hex()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    panel = Panel(base, token)
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        for _ in range(200):
            try:
                panel.get("medsec/studies")
                break
            except OSError:
                time.sleep(0.1)
        panel.start()
        cell = (
            "import time as _t\n_t0 = _t.perf_counter()\n"
            "for _ in range(3):\n"
            f"    get_ipython().run_line_magic('load_secure_study', '{study} --identity {key} --purpose EDU --as ct')\n"
            "    get_ipython().run_line_magic('unload_secure_study', 'ct')\n"
            "_dt = (_t.perf_counter() - _t0) / 3"
        )

        def one() -> float:
            reply = kc.execute_interactive(
                cell, user_expressions={"dt": "_dt"}, store_history=False, timeout=120, output_hook=lambda msg: None
            )
            assert reply["content"]["status"] == "ok", reply["content"]
            return float(reply["content"]["user_expressions"]["dt"]["data"]["text/plain"])

        kc.execute_interactive("%load_ext medsec_nb", timeout=60, output_hook=lambda msg: None)
        one(), one()

        rng = random.Random(7)

        def timed(open_panel: bool) -> float:
            (panel.active.set if open_panel else panel.active.clear)()
            time.sleep(rng.uniform(0.2, 1.2))
            return one()

        ratios, with_p, without = [], [], []
        for r in range(loads):
            first = r % 2 == 0
            a = timed(first)
            b = timed(not first)
            on, off = (a, b) if first else (b, a)
            with_p.append(on)
            without.append(off)
            ratios.append(on / off)
        panel.stop.set()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        server.terminate()
        server.wait(30)
    ratio = statistics.median(ratios)
    print(
        f"[2] %load_secure_study in a kernel: {statistics.median(with_p) * 1e3:.1f} ms with the panel open "
        f"({panel.calls} panel requests), {statistics.median(without) * 1e3:.1f} ms without: "
        f"ratio {ratio:.3f} (bound {BOUNDS['load']})"
    )
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--loads", type=int, default=40)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    page = bench_page(args.records, args.rounds)
    load = bench_load(args.loads)
    ok = page <= BOUNDS["page"] and load <= BOUNDS["load"]
    print("all bounds met" if ok else "a bound was NOT met")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
