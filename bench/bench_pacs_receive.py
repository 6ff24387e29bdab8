"""``medsec receive`` throughput, side by side with Orthanc storing the same association (issue 17, "Measured").

    python bench/bench_pacs_receive.py [--rounds 3] [--slices 300] [--size 512]

One pynetdicom SCU (this process) sends the same study (``synthesize_datasets``, in memory) over one
C-STORE association to (a) ``medsec receive`` (its own process, one recipient) until the container is
written, and (b) a real Orthanc (its own process, storage on disk, uncompressed, its largest PDU) until the
association is released (Orthanc answers each C-STORE after storing it); the study is deleted from Orthanc after
each round; then (a) again beside (c) a plain pynetdicom SCP that writes each instance to a file (what
storescp does; no encryption, no fsync). Routes alternate within each round. Prints seconds, instances per
second and the ratios. ``--memory``: the receiver's peak resident memory for 300 and for 1200 slices.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pacs"))  # the tests' Orthanc
from orthanc import Orthanc, free_port
from pairs import paired_rounds
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from medsec_nb.keys.identity import generate_identity, save_identity
from medsec_nb.testdata import synthesize_datasets

CT = "1.2.840.10008.5.1.4.1.1.2"
#: A plain storage SCP on the same pynetdicom stack: each instance written to its own file, as storescp does.
PLAIN_SCP = """
import sys
from pathlib import Path
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
out, port = Path(sys.argv[1]), int(sys.argv[2])
def store(event):
    (out / (event.request.AffectedSOPInstanceUID + ".dcm")).write_bytes(event.encoded_dataset())
    return 0
ae = AE(ae_title="PLAIN")
ae.maximum_pdu_size = 0
ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ALL_TRANSFER_SYNTAXES)
ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, store)])
"""


def send(datasets, port: int, called: str) -> None:
    ae = AE(ae_title="BENCH")
    ae.dimse_timeout = ae.network_timeout = 300  # a shared machine may be slow
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"{called}: association not established"
    for ds in datasets:
        status = assoc.send_c_store(ds)
        assert status and int(status.Status) == 0, f"{called}: C-STORE failed ({status})"
    assoc.release()


class FastOrthanc(Orthanc):
    """The tests' Orthanc with its largest PDU (DCMTK's 128 KB; the default 16 KB costs it about a third)."""

    def config(self) -> dict:
        return {**super().config(), "MaximumPduLength": 131072}


def peak_memory(n_slices: int, size: int) -> int:
    """Peak resident memory (VmHWM, bytes) of a fresh ``medsec receive`` that received ``n_slices`` instances."""
    datasets = synthesize_datasets(n_slices, rows=size, columns=size)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pub = save_identity(generate_identity("x25519"), work / "site", None)[1]
        port = free_port()
        receiver = subprocess.Popen(
            [sys.executable, "-m", "medsec_nb.cli", "receive", "-o", tmp, "-r", str(pub), "--port", str(port)]
            + ["--allow-caller", "BENCH", "--purpose", "TREAT"],
            env={**os.environ, "MEDSEC_AUDIT_LOG": str(work / "audit.jsonl")},
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(5)
            send(datasets, port, "MEDSEC")
            while not (work / "audit.jsonl").exists():
                time.sleep(0.05)
            status = Path(f"/proc/{receiver.pid}/status").read_text()
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) * 1024
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--memory", action="store_true", help="only: peak memory of the receiver for 300 and 1200 slices")
    args = ap.parse_args()
    if args.memory:
        for n in (300, 1200):
            peak = peak_memory(n, args.size) / 1e6
            print(f"peak memory of medsec receive, {n} x {args.size}x{args.size}: {peak:.0f} MB")
        return
    datasets = synthesize_datasets(args.slices, rows=args.size, columns=args.size)
    mb = sum(len(ds.PixelData) for ds in datasets) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pub = save_identity(generate_identity("x25519"), work / "site", None)[1]
        incoming = work / "incoming"
        incoming.mkdir()
        port = free_port()
        env = {**os.environ, "MEDSEC_AUDIT_LOG": str(work / "audit.jsonl")}
        receiver = subprocess.Popen(
            [sys.executable, "-m", "medsec_nb.cli", "receive", "-o", str(incoming), "-r", str(pub)]
            + ["--port", str(port), "--allow-caller", "BENCH", "--purpose", "TREAT"],
            env=env,
            stderr=open(work / "receive.log", "w"),  # closed with the process
            stdout=subprocess.DEVNULL,
        )
        plain_dir = work / "plain"
        plain_dir.mkdir()
        plain_port = free_port()
        plain = subprocess.Popen([sys.executable, "-c", PLAIN_SCP, str(plain_dir), str(plain_port)])
        pacs = FastOrthanc(work / "orthanc").start()
        try:
            audit = work / "audit.jsonl"

            def written() -> int:
                return audit.read_bytes().count(b'"action":"receive"') if audit.exists() else 0

            time.sleep(5)  # the receiver imports pydicom and pynetdicom

            def to_medsec() -> None:
                before = written()
                send(datasets, port, "MEDSEC")
                while written() == before:  # the container is written and recorded once the association ended
                    time.sleep(0.01)

            def to_orthanc() -> None:
                send(datasets, pacs.dicom_port, pacs.aet)

            def after(route: str) -> None:
                if route == "a":
                    for f in incoming.glob("*.msec"):
                        f.unlink()
                else:
                    for study in pacs.get_json("/studies"):
                        pacs.rest("DELETE", f"/studies/{study}")

            def to_plain() -> None:
                send(datasets, plain_port, "PLAIN")

            def after_plain(route: str) -> None:
                if route == "a":
                    after("a")
                else:
                    for f in plain_dir.iterdir():
                        f.unlink()

            pairs = paired_rounds(to_medsec, to_orthanc, args.rounds, after=after)
            plain_pairs = paired_rounds(to_medsec, to_plain, args.rounds, after=after_plain)
        finally:
            plain.terminate()
            plain.wait(30)
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(60)
            print((work / "receive.log").read_text()[-3000:], file=sys.stderr)
            pacs.stop()
    med_a = statistics.median(a for a, _ in pairs)
    med_b = statistics.median(b for _, b in pairs)
    ratio = statistics.median(a / b for a, b in pairs)
    print(f"study: {args.slices} x {args.size}x{args.size} int16 ({mb:.1f} MB pixel data), one association")
    print(f"medsec receive (container written): {med_a:.2f} s, {args.slices / med_a:.0f} instances/s")
    print(f"Orthanc C-STORE to its storage:     {med_b:.2f} s, {args.slices / med_b:.0f} instances/s")
    print(f"ratio medsec / Orthanc: {ratio:.3f} (median of {args.rounds} paired rounds)")
    med_p = statistics.median(b for _, b in plain_pairs)
    med_a2 = statistics.median(a for a, _ in plain_pairs)
    ratio_p = statistics.median(a / b for a, b in plain_pairs)
    print(f"second pairing: medsec receive {med_a2:.2f} s; plain pynetdicom SCP writing files {med_p:.2f} s")
    print(f"ratio medsec / plain SCP to files: {ratio_p:.3f} (median of {args.rounds} paired rounds)")


if __name__ == "__main__":
    main()
