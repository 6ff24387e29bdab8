"""``medsec pull`` over DICOMweb, side by side with dicomweb-client saving plain files (issue 17, "Measured").

    python bench/bench_pacs_pull.py [--rounds 3] [--slices 300] [--size 512] [--memory 300,1200]

A real Orthanc (its own process, storage on disk) holds the study (``synthesize_datasets``, uploaded from
memory). Timed in this process, rounds alternating:
  (a) ``pull_study``: QIDO-RS, one streamed WADO-RS answer, each instance encrypted into a ``.msec``
      (one x25519 recipient, recorded in an audit log);
  (b) dicomweb-client's ``iter_study`` (the same streamed WADO-RS retrieve) saving each instance as a
      plain file (``save_as``): what a script would do without medsec-nb;
  (c) for information: the same WADO-RS answer split by medsec-nb's reader and each part's bytes
      written to a plain file (no parsing at all).
Then peak memory (VmHWM / ru_maxrss of a fresh ``medsec pull`` process) for studies of each size in
``--memory``: streaming means it does not grow with the study.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pacs"))  # the tests' Orthanc
import requests
from dicomweb_client.api import DICOMwebClient
from orthanc import Orthanc
from pairs import paired_rounds

from medsec_nb.audit import AuditLog
from medsec_nb.container.sources import dataset_bytes
from medsec_nb.keys.identity import generate_identity, save_identity
from medsec_nb.pacs.dicomweb import ACCEPT_AS_STORED, CHUNK, DicomWeb, multipart_parts
from medsec_nb.pacs.peer import StudyQuery
from medsec_nb.pacs.pull import pull_study
from medsec_nb.testdata import synthesize_datasets

BATCH = 50


def upload(pacs: Orthanc, slices: int, size: int) -> str:
    """A ``slices``-instance study, made and uploaded ``BATCH`` at a time (memory stays small); its UID."""
    first = None
    for start in range(0, slices, BATCH):
        batch = synthesize_datasets(min(BATCH, slices - start), rows=size, columns=size)
        for k, ds in enumerate(batch):
            if first is None:
                first = ds
            ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, first.SeriesInstanceUID
            ds.FrameOfReferenceUID = first.FrameOfReferenceUID
            ds.InstanceNumber = start + k + 1
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], round((start + k) * 1.25, 4)]
            pacs.upload(dataset_bytes(ds))
    assert first is not None
    return str(first.StudyInstanceUID)


def peak_kib(argv: list[str], env: dict[str, str]) -> int:
    """Peak resident memory (KiB) of a fresh process running ``argv``; it must succeed."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert os.waitstatus_to_exitcode(status) == 0, err
    return int(usage.ru_maxrss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--memory", default="300,1200", help="study sizes (slices) for the peak memory rows")
    args = ap.parse_args()
    sizes = [int(n) for n in args.memory.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ident = generate_identity("x25519")
        pub = save_identity(ident, work / "site", None)[1]
        log = AuditLog(work / "audit.jsonl")
        pacs = Orthanc(work / "orthanc").start()
        try:
            uid = upload(pacs, args.slices, args.size)
            peer = DicomWeb(pacs.dicomweb_url)
            query = StudyQuery(study_uid=uid)
            plain = work / "plain"

            def medsec() -> None:
                pull_study(peer, query, work / "study.msec", [ident.public], purpose="TREAT", log=log, progress=False)

            def dicomweb_client() -> None:
                plain.mkdir()
                for ds in DICOMwebClient(pacs.dicomweb_url).iter_study(uid, media_types=(("application/dicom", "*"),)):
                    ds.save_as(plain / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)

            def raw_files() -> None:
                plain.mkdir()
                url = f"{pacs.dicomweb_url}/studies/{uid}"
                with requests.get(url, headers={"Accept": ACCEPT_AS_STORED}, stream=True, timeout=60) as r:
                    r.raise_for_status()
                    for k, part in enumerate(multipart_parts(r.headers["Content-Type"], r.iter_content(CHUNK))):
                        (plain / f"IM{k:05d}.dcm").write_bytes(part)

            def after(route: str) -> None:
                if route == "a":
                    (work / "study.msec").unlink()
                else:
                    shutil.rmtree(plain)

            main_pairs = paired_rounds(medsec, dicomweb_client, args.rounds, after=after)
            raw_pairs = paired_rounds(medsec, raw_files, args.rounds, after=after)

            env = {**os.environ, "MEDSEC_AUDIT_LOG": str(work / "audit.jsonl"), "MEDSEC_PURPOSE": "TREAT"}
            peaks = {}
            for n in sizes:
                study = uid if n == args.slices else upload(pacs, n, args.size)
                argv = [sys.executable, "-m", "medsec_nb.cli", "pull", "--dicomweb", pacs.dicomweb_url]
                argv += ["--study-uid", study, "-o", str(work / f"m{n}.msec"), "-r", str(pub), "-q"]
                peaks[n] = peak_kib(argv, env)
                (work / f"m{n}.msec").unlink()
        finally:
            pacs.stop()
    mb = args.slices * args.size * args.size * 2 / 1e6
    print(f"study: {args.slices} x {args.size}x{args.size} int16 ({mb:.0f} MB pixel data), Orthanc on 127.0.0.1")
    for name, pairs in (("dicomweb-client iter_study + save_as", main_pairs), ("raw parts to files (info)", raw_pairs)):
        a = statistics.median(x for x, _ in pairs)
        b = statistics.median(y for _, y in pairs)
        ratio = statistics.median(x / y for x, y in pairs)
        print(f"pull_study into .msec: {a:.2f} s | {name}: {b:.2f} s | ratio {ratio:.3f} ({args.rounds} paired rounds)")
    for n, kib in peaks.items():
        print(f"peak memory, medsec pull of {n} x {args.size}x{args.size}: {kib / 1024:.0f} MiB (ru_maxrss)")
    if len(peaks) > 1:
        lo, hi = min(peaks), max(peaks)
        print(f"peak memory {hi} / {lo} slices: {peaks[hi] / peaks[lo]:.3f} (goal: about 1, it does not grow)")


if __name__ == "__main__":
    main()
