"""The README's run command: the headless demo prints a redacted summary and leaves no plaintext."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file


def test_demo_prints_redacted_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEDSEC_PURPOSE"}  # the demo states its own
    r = subprocess.run(
        [sys.executable, "-m", "medsec_nb.cli.demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "series 0: CT, 24 instances, volume (24, 256, 256)" in out
    assert "PatientName" in out and "redacted" in out
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    values = [str(template.get(k, "")) for k in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName")]
    assert values[0] and values[1]
    for value in filter(None, values):
        assert value not in out
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert files == [
        "audit.checkpoints",
        "audit.jsonl",
        "ct_demo.msec",
        "demo-analyst.key",
        "demo-analyst.pub",
        "demo-producer.key",
        "demo-producer.pub",
    ] or files == [
        "audit.jsonl",
        "ct_demo.msec",
        "demo-analyst.key",
        "demo-analyst.pub",
        "demo-producer.key",
        "demo-producer.pub",
    ]
    assert "open success" in out and "decrypt-series success" in out and "chain: intact" in out
    assert not any(p.suffix == ".dcm" for p in tmp_path.rglob("*"))


def test_build_demo_writes_only_in_its_folder(tmp_path):
    """The demo series is made and encrypted in memory: every file or folder ``build_demo`` creates is
    in the demo folder (it once wrote the plaintext series to a temporary folder to encrypt it)."""
    from medsec_nb.cli.demo import build_demo

    created: list[str] = []
    recording = [True]

    def hook(event: str, args: tuple) -> None:  # audit hooks cannot be removed: this one stops recording
        if not recording[0] or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if event == "os.mkdir" or (
            event == "open"
            and (
                (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
                or (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            )
        ):
            created.append(os.path.abspath(os.fsdecode(args[0])))

    sys.addaudithook(hook)
    try:
        build_demo(tmp_path / "demo", slices=3)
    finally:
        recording[0] = False
    assert created and all(Path(p).parent == tmp_path / "demo" or Path(p) == tmp_path / "demo" for p in created), (
        created
    )
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "ct_demo.msec",
        "demo-analyst.key",
        "demo-analyst.pub",
        "demo-producer.key",
        "demo-producer.pub",
    ]
