"""The headless demo: build a demo study from pydicom's bundled files, encrypt it, open it,
print a redacted summary. ``python -m medsec_nb.cli.demo [--dir demo]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..audit import AuditLog, verify_log
from ..container.header import inspect_study
from ..container.writer import encrypt_datasets
from ..deid.redaction import redacted_items
from ..keys.identity import generate_identity, load_identity, save_identity
from ..study.study import open_study
from ..testdata import synthesize_datasets

SHOWN = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "Modality",
    "Manufacturer",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDescription",
    "SliceThickness",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsStored",
    "RescaleIntercept",
    "RescaleSlope",
)


def _identity(folder: Path, name: str, key_type: str):
    key = folder / f"{name}.key"
    if key.exists():
        return load_identity(key)
    ident = generate_identity(key_type)
    save_identity(ident, folder / name)  # demo only: unencrypted demo keys
    return ident


def build_demo(folder: Path, slices: int = 24) -> tuple[Path, Path, Path]:
    """Create (or reuse) demo keys and ``ct_demo.msec`` in ``folder``; nothing else is written."""
    folder.mkdir(parents=True, exist_ok=True)
    analyst = _identity(folder, "demo-analyst", "x25519")
    producer = _identity(folder, "demo-producer", "ed25519")
    study = folder / "ct_demo.msec"
    if not study.exists():  # the series is made and encrypted in memory: no plaintext file at any point
        series = synthesize_datasets(slices, rows=256, columns=256)
        encrypt_datasets(series, study, recipients=[analyst.public], signer=producer, progress=False)
    return study, folder / "demo-analyst.key", folder / "demo-producer.pub"


def summary(study_path: Path, identity_path: Path, signer_pub: Path, audit_log: Path) -> str:
    lines = ["== public header (medsec inspect) ==", *inspect_study(study_path).lines(), ""]
    with open_study(
        study_path,
        identity=identity_path,
        require_signer=signer_pub,
        purpose="EDU",
        purpose_text="medsec-nb demo",
        audit_log=audit_log,
    ) as study:
        lines.append(f"== opened with {study.key_id}; signature by {study.signer} verified ==")
        for n, s in enumerate(study.series):
            vol = s.volume(progress=False)
            lines.append(
                f"series {n}: {s.modality}, {len(s)} instances, volume {vol.shape} {vol.dtype}, "
                f"values {int(vol.min())}..{int(vol.max())} (HU), mean {float(np.mean(vol)):.1f}"
            )
        lines.append("")
        lines.append("== first instance header, identifying values redacted ==")
        rows = {kw: (tag, val) for tag, kw, val in redacted_items(study.series[0].header(0))}
        for kw in SHOWN:
            if kw in rows:
                tag, val = rows[kw]
                lines.append(f"  {tag} {kw:<24} {val}")
    lines += ["", f"== audit trail ({audit_log}) =="]
    for rec in list(AuditLog(audit_log).records())[-2:]:
        lines.append(
            f"  #{rec['seq']} {rec['action']} {rec['outcome']} by {rec['who']['os_user']} "
            f"for {rec['why']['purpose']} with {rec['who']['key_id']}"
        )
    report = verify_log(audit_log)
    lines.append(f"  chain: {'intact' if report.ok else 'BROKEN'}, {report.records} records")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medsec_nb.cli.demo", description=__doc__)
    ap.add_argument("--dir", default="demo", help="where the demo keys and container go (default: ./demo)")
    args = ap.parse_args(argv)
    study, ident, signer = build_demo(Path(args.dir))
    log = Path(args.dir) / "audit.jsonl"
    print(summary(study, ident, signer, log))
    print(
        f"\nTry: medsec inspect {study}\n"
        f"     MEDSEC_AUDIT_LOG={log} medsec verify {study} -i {ident} --require-signer {signer} --purpose EDU\n"
        f"     MEDSEC_AUDIT_LOG={log} medsec audit show"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
