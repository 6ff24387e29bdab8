"""The `medsec` command line, run as a real subprocess."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from medsec_nb.audit import AuditLog
from medsec_nb.container.header import read_header
from medsec_nb.testdata import synthesize_series

SCRIPT = Path(sys.executable).with_name("medsec")
KEY_PW = "kp-Zebra-5531"
STUDY_PW = "sp-Otter-9920"


def medsec(*args, cwd, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "medsec_nb.cli"]
    return subprocess.run(
        cmd + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, stdin=stdin, timeout=120
    )


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("medsec: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    synthesize_series(d / "CT", 5, rows=64, columns=64)
    (d / "kp.txt").write_text(KEY_PW + "\n")
    (d / "pw.txt").write_text(STUDY_PW + "\n")
    return d


def test_help_teaches(work):
    r = medsec("--help", cwd=work)
    assert r.returncode == 0
    assert "medsec encrypt CT_STUDY/ -o study.msec -r site-a.pub" in r.stdout
    for cmd in ("keygen", "encrypt", "inspect", "verify", "add-recipient", "decrypt"):
        h = medsec(cmd, "--help", cwd=work)
        assert h.returncode == 0 and "example:" in h.stdout and f"medsec {cmd}" in h.stdout


def test_steward_workflow(work):
    assert medsec("keygen", "--out", "site-a", "--key-passphrase-file", "kp.txt", cwd=work).returncode == 0
    r = medsec("keygen", "--out", "site-b", "--type", "p256", "--unencrypted", cwd=work)
    assert r.returncode == 0 and "UNENCRYPTED" in r.stderr
    assert medsec("keygen", "--out", "site-c", "--type", "rsa3072", "--unencrypted", cwd=work).returncode == 0
    assert (
        medsec(
            "keygen", "--out", "producer", "--type", "ed25519", "--key-passphrase-file", "kp.txt", cwd=work
        ).returncode
        == 0
    )
    r = medsec(
        "encrypt",
        "CT",
        "-o",
        "study.msec",
        "-r",
        "site-a.pub",
        "-r",
        "site-b.pub",
        "--sign",
        "producer.key",
        "--key-passphrase-file",
        "kp.txt",
        "-q",
        cwd=work,
    )
    assert r.returncode == 0, r.stderr
    r = medsec("inspect", "study.msec", cwd=work)
    assert r.returncode == 0 and "instances:       5" in r.stdout and "ed25519:" in r.stdout
    ds = pydicom.dcmread(next((work / "CT").iterdir()))
    for secret in (str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID), KEY_PW):
        assert secret not in r.stdout
    r = medsec(
        "verify",
        "study.msec",
        "-i",
        "site-a.key",
        "--key-passphrase-file",
        "kp.txt",
        "--require-signer",
        "producer.pub",
        "-q",
        cwd=work,
    )
    assert r.returncode == 0 and r.stdout.startswith("OK ")
    hlen = read_header(work / "study.msec")[0].length
    payload_before = (work / "study.msec").read_bytes()[hlen:]
    r = medsec("add-recipient", "study.msec", "-i", "site-b.key", "-r", "site-c.pub", cwd=work)
    assert r.returncode == 0 and "added rsa3072:" in r.stdout
    after = (work / "study.msec").read_bytes()
    assert after[read_header(work / "study.msec")[0].length :] == payload_before  # payload untouched
    r = medsec(
        "decrypt", "study.msec", "-i", "site-c.key", "-o", "OUT", "--require-signer", "producer.pub", "-q", cwd=work
    )
    assert r.returncode == 0, r.stderr
    for f in (work / "CT").iterdir():
        assert filecmp.cmp(f, work / "OUT" / f.name, shallow=False)
    for r in (medsec("verify", "study.msec", "-i", "site-a.key", "--key-passphrase-file", "pw.txt", cwd=work),):
        line = one_error_line(r)
        assert "site-a.key" in line and "passphrase" in line and STUDY_PW not in line and KEY_PW not in line


def test_passphrase_study_and_errors(work):
    r = medsec("encrypt", "CT", "-o", "pw.msec", "--passphrase-file", "pw.txt", "-q", cwd=work)
    assert r.returncode == 0
    assert medsec("verify", "pw.msec", "--passphrase-file", "pw.txt", "-q", cwd=work).returncode == 0
    line = one_error_line(medsec("verify", "pw.msec", "--passphrase-file", "kp.txt", cwd=work))
    assert "pw.msec" in line and "wrong passphrase" in line and KEY_PW not in line
    line = one_error_line(medsec("verify", "pw.msec", cwd=work))  # no terminal: no silent hang
    assert "no terminal" in line
    (work / "junk.msec").write_bytes(os.urandom(500))
    assert "not a medsec container" in one_error_line(medsec("inspect", "junk.msec", cwd=work))
    assert "no such file" in one_error_line(medsec("inspect", "absent.msec", cwd=work))
    data = bytearray((work / "pw.msec").read_bytes())
    data[-100] ^= 1
    (work / "flipped.msec").write_bytes(bytes(data))
    line = one_error_line(medsec("verify", "flipped.msec", "--passphrase-file", "pw.txt", "-q", cwd=work))
    assert "flipped.msec" in line and "authentication" in line


def test_bad_source_leaves_nothing(work):
    src = work / "CT_bad"
    shutil.copytree(work / "CT", src)
    (src / "notes.txt").write_text("not dicom")
    line = one_error_line(medsec("encrypt", "CT_bad", "-o", "bad.msec", "--passphrase-file", "pw.txt", cwd=work))
    assert "notes.txt" in line and "DICOM" in line
    assert not (work / "bad.msec").exists()
    assert not [p for p in work.iterdir() if p.name.endswith(".part")]


def test_usage_errors_are_one_line(work):
    r = medsec("encrypt", "CT", cwd=work)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--output" in r.stderr
    line = one_error_line(medsec("encrypt", "CT", "-o", "x.msec", cwd=work))
    assert "recipient" in line


def test_library_warnings_are_one_line_each(work, tmp_path):
    """pydicom warns about bad_sequence.dcm's malformed UIDs: one line each, no library path or code."""
    from pydicom.data import get_testdata_file

    src = tmp_path / "STUDY" / "bad_sequence.dcm"
    src.parent.mkdir()
    shutil.copyfile(get_testdata_file("bad_sequence.dcm"), src)
    r = medsec(
        "encrypt", src.parent, "-o", tmp_path / "b.msec", "--passphrase-file", work / "pw.txt", "-q", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith(f"medsec: warning: {src}: ") for ln in lines), r.stderr
    assert "site-packages" not in r.stderr and "warn_and_log" not in r.stderr
    assert str(pydicom.dcmread(src, stop_before_pixels=True).StudyInstanceUID) not in r.stderr


def test_purpose_text_is_recorded_by_every_unlocking_command(work, tmp_path):
    """``--purpose-text`` reached verify, decrypt and add-recipient as an unexpected keyword
    ("internal error"); each command now records it."""
    key = tmp_path / "k"
    assert medsec("keygen", "--out", key, "--unencrypted", cwd=work).returncode == 0
    assert medsec("encrypt", "CT", "-o", tmp_path / "s.msec", "-r", f"{key}.pub", "-q", cwd=work).returncode == 0
    env_log = tmp_path / "audit.jsonl"
    common = ["-i", f"{key}.key", "--purpose", "HRESCH", "--purpose-text", "protocol 2026-17"]
    for args in (
        ["verify", tmp_path / "s.msec", "-q"],
        ["decrypt", tmp_path / "s.msec", "-o", tmp_path / "out", "-q"],
        ["add-recipient", tmp_path / "s.msec", "-r", f"{key}.pub"],
    ):
        cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "medsec_nb.cli"]
        r = subprocess.run(
            cmd + [str(a) for a in (*args, *common)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "MEDSEC_AUDIT_LOG": str(env_log)},
        )
        assert r.returncode == 0 and "internal error" not in r.stderr, (args[0], r.stderr)
    texts = {rec["why"]["text"] for rec in AuditLog(env_log).records()}
    assert texts == {"protocol 2026-17"}
