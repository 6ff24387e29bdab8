"""What `medsec audit verify` may trust (issue 18, item 3), each attack replayed through the CLI
(``medsec_nb.cli.main``) and ``verify_log``:

* records after the latest signed checkpoint are counted as not covered; ``--strict`` fails on them;
* the default trust anchor (the key beside the log) is named and flagged; a pinned key catches a
  rewritten log re-signed with a replaced key;
* a note needs one trusted signature: untrusted co-signatures and other signers' notes are ignored;
* a real kernel that decrypted writes a checkpoint when it shuts down.

Every test has its own medsec data folder; real keys, real files, a real kernel.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

import medsec_nb
from medsec_nb.audit import AuditLog, verify_log
from medsec_nb.audit import checkpoint as ckpt
from medsec_nb.audit.record import GENESIS, canonical, record_hash
from medsec_nb.cli.main import main
from medsec_nb.keys.identity import generate_identity, private_pem, save_identity

ENV = (
    "MEDSEC_AUDIT_LOG",
    "MEDSEC_AUDIT_CHECKPOINTS",
    "MEDSEC_AUDIT_CHECKPOINT_KEY",
    "MEDSEC_AUDIT_CHECKPOINT_EVERY",
    "JUPYTERHUB_USER",
    "JPY_SESSION_NAME",
)
STUDY = {"container_sha256": "cd" * 32, "study_uid": "1.2.826.0.1.3680043.8.498.4242", "instances": 3}


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch) -> Path:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "data"
    monkeypatch.setenv("MEDSEC_DATA_DIR", str(folder))
    return folder


def fill(log: AuditLog, n: int) -> None:
    for _ in range(n):
        log.append(action="open", outcome="success", purpose="HRESCH", study=STUDY)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- 1. the uncovered tail


def test_records_after_the_latest_checkpoint_are_counted_and_strict_fails(tmp_path, capsys):
    """35 records, a checkpoint at 32: records 33-35 could be deleted unnoticed, so verify says so."""
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 32)
    log.checkpoint()
    fill(log, 3)
    rep = verify_log(log.path)
    assert rep.ok and rep.records == 35 and rep.uncovered == 3, rep.message
    assert "3 records after the latest checkpoint are not covered" in rep.message

    code, out, err = cli(capsys, "audit", "verify", "--log", log.path)
    assert code == 0 and out.startswith("OK ")  # the default: a warning, exit 0
    assert "3 records after the latest checkpoint are not covered: deleting them would go unnoticed" in err
    code, out, err = cli(capsys, "audit", "verify", "--log", log.path, "--strict")
    assert code == 1 and out == ""
    assert err.startswith("medsec: error: ") and err.count("\n") == 1 and "3 records" in err

    log.path.write_bytes(b"".join(lines(log.path)[:32]))  # the attack: the tail deleted
    assert verify_log(log.path).ok  # undetectable, as announced

    log.checkpoint()
    code, out, err = cli(capsys, "audit", "verify", "--log", log.path, "--strict")
    assert code == 0 and verify_log(log.path).uncovered == 0, err


def test_strict_fails_without_any_checkpoint(tmp_path, capsys):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 2)
    rep = verify_log(log.path)
    assert rep.ok and rep.uncovered == 2 and rep.checkpoints == 0
    code, _, err = cli(capsys, "audit", "verify", "--log", log.path)
    assert code == 0 and "no checkpoint" in err
    code, _, err = cli(capsys, "audit", "verify", "--log", log.path, "--strict")
    assert code == 1 and "2 records" in err and err.count("\n") == 1


# ---------------------------------------------------------------- 2. the key beside the log


def _rechain(path: Path) -> None:
    """Rewrite every record (the outcome of record 2 becomes 'denied') with a valid new chain."""
    out, prev = [], GENESIS
    for i, line in enumerate(lines(path)):
        rec = json.loads(line)
        if i == 1:
            rec["outcome"] = "denied"
        rec["prev"] = prev
        rec["hash"] = prev = record_hash(rec)
        out.append(canonical(rec) + b"\n")
    path.write_bytes(b"".join(out))


def test_same_folder_key_swap_is_flagged_and_caught_by_a_pinned_key(data_dir, tmp_path, capsys):
    log = AuditLog(checkpoint_every=4)  # the default place: beside audit-checkpoint.pub
    fill(log, 10)
    log.checkpoint()
    installed = data_dir / "audit-checkpoint.pub"
    pinned = tmp_path / "steward" / "pinned.pub"  # the steward's copy, kept elsewhere
    pinned.parent.mkdir()
    shutil.copyfile(installed, pinned)
    old_id = ckpt.signing_identity().key_id

    _rechain(log.path)  # the same-user attacker rewrites the log,
    new = generate_identity("ed25519")  # replaces the installation key beside it
    (data_dir / "audit-checkpoint.key").write_text(private_pem(new))
    installed.write_text(new.public.pem() + "\n")
    log.checkpoints_path.unlink()  # and signs the rewritten log again
    AuditLog().checkpoint()

    rep = verify_log()
    assert rep.ok, rep.message  # consistent with the key it was given...
    code, out, err = cli(capsys, "audit", "verify")
    assert code == 0
    assert new.key_id in out and str(installed) in out  # ...which verify names
    assert "proves nothing against" in err and "--public-key" in err
    assert any("proves nothing against" in w for w in rep.warnings)

    code, out, err = cli(capsys, "audit", "verify", "--public-key", pinned)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "not signed by a trusted key" in err and old_id in err

    log.checkpoints_path.unlink()  # deleting the checkpoints instead
    code, _, err = cli(capsys, "audit", "verify", "--public-key", pinned)
    assert code == 1 and "no checkpoint" in err and old_id in err


def test_a_pinned_key_is_named_and_not_flagged(data_dir, tmp_path, capsys):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 2)
    log.checkpoint()
    pinned = tmp_path / "steward" / "pinned.pub"
    pinned.parent.mkdir()
    shutil.copyfile(data_dir / "audit-checkpoint.pub", pinned)
    code, out, err = cli(capsys, "audit", "verify", "--log", log.path, "--public-key", pinned)
    assert code == 0 and str(pinned) in out and ckpt.signing_identity().key_id in out
    assert "proves nothing" not in err


# ---------------------------------------------------------------- 3. co-signatures


@pytest.fixture
def steward(tmp_path) -> tuple[medsec_nb.Identity, Path]:
    ident = generate_identity("ed25519")
    key, _ = save_identity(ident, tmp_path / "steward", "steward-pw-Kq81")
    (tmp_path / "pw").write_text("steward-pw-Kq81\n")
    return ident, key


def test_co_signed_note_verifies_with_the_steward_key_alone(tmp_path, capsys, steward):
    """Installation checkpoints every 4 records, then one co-signed by the steward: an honest log."""
    ident, key = steward
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=4)
    fill(log, 10)
    code, out, err = cli(
        capsys,
        "audit",
        "checkpoint",
        "--log",
        log.path,
        "--identity",
        key,
        "--key-passphrase-file",
        tmp_path / "pw",
        "--co-sign",
    )
    assert code == 0, err
    _, _, signatures = ckpt.parse(out)
    installation = ckpt.signing_identity().key_id
    assert [name for name, _, _ in signatures] == [ident.key_id, installation]

    code, out, err = cli(capsys, "audit", "verify", "--log", log.path, "--public-key", tmp_path / "steward.pub")
    assert code == 0, err
    rep = verify_log(log.path, public_key=ident.public)
    assert rep.ok and rep.checkpoints == 1 and rep.untrusted == 2 and rep.uncovered == 0, rep.message
    rep = verify_log(log.path)  # the installation key accepts all three
    assert rep.ok and rep.checkpoints == 3 and rep.untrusted == 0, rep.message


def test_steward_only_checkpoint_beside_installation_ones_verifies(tmp_path, capsys, steward):
    """The reported failure: one installation-signed note made a steward-pinned check fail."""
    _, key = steward
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=4)
    fill(log, 6)
    assert (
        cli(
            capsys,
            "audit",
            "checkpoint",
            "--log",
            log.path,
            "--identity",
            key,
            "--key-passphrase-file",
            tmp_path / "pw",
        )[0]
        == 0
    )
    code, out, err = cli(capsys, "audit", "verify", "--log", log.path, "--public-key", tmp_path / "steward.pub")
    assert code == 0, err
    assert "1 checkpoint not signed by a trusted key ignored" in out


def test_notes_with_only_untrusted_signatures_still_fail(tmp_path, capsys, steward):
    ident, _ = steward
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=4)
    fill(log, 9)  # two installation-only notes
    code, _, err = cli(capsys, "audit", "verify", "--log", log.path, "--public-key", tmp_path / "steward.pub")
    assert code == 1 and "not signed by a trusted key" in err
    rep = verify_log(log.path, public_key=ident.public)
    assert not rep.ok and rep.checkpoints == 0 and rep.untrusted == 2


def test_a_forged_trusted_co_signature_fails(tmp_path, steward):
    """A note whose installation signature is valid but whose steward line is not: altered or forged."""
    ident, _ = steward
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 3)
    cp = log.checkpoint(ident, co_sign=True)
    body, _, sigs = cp["note"].partition("\n\n")
    first, second = sigs.splitlines()
    name, blob = first.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 1  # one bit of the steward's signature
    forged = f"{name} {base64.b64encode(bytes(raw)).decode()}"
    log.checkpoints_path.write_text(json.dumps({"note": f"{body}\n\n{forged}\n{second}\n"}) + "\n")
    assert verify_log(log.path).ok  # the installation's line is intact
    rep = verify_log(log.path, public_key=ident.public)
    assert not rep.ok and "invalid" in rep.message


# ---------------------------------------------------------------- 4. kernel shutdown


@pytest.mark.slow
def test_a_kernel_that_decrypted_writes_a_checkpoint_when_it_shuts_down(tmp_path, signed_container, identities):
    key, _ = save_identity(identities.x25519, tmp_path / "analyst")
    expected = tmp_path / "kernel"
    data = expected / "medsec"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEC_")}
    env.update(
        MEDSEC_DATA_DIR=str(data),
        MEDSEC_PURPOSE="HRESCH",
        IPYTHONDIR=str(expected / "ipython"),
        MPLCONFIGDIR=str(expected / "mpl"),
        JUPYTER_RUNTIME_DIR=str(expected / "runtime"),
    )
    (expected / "runtime").mkdir(parents=True)
    km = KernelManager(kernel_name="python3", connection_file=str(expected / "runtime" / f"kernel-{uuid.uuid4()}.json"))
    km.start_kernel(env=env, extra_arguments=["--HistoryManager.hist_file=:memory:"])
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        code = (
            f"import medsec_nb\nct = medsec_nb.open_study({str(signed_container)!r}, identity={str(key)!r})\n"
            "ct.series[0].volume().shape"
        )
        reply = kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=False)
    log = data / "audit.jsonl"
    records = len(lines(log))
    assert records >= 2  # the open and the bulk read
    notes = [note for _, note in ckpt.stored(data / "audit.checkpoints")]
    assert notes and ckpt.parse(notes[-1])[0].size == records
    rep = verify_log(log, public_key=data / "audit-checkpoint.pub")  # the kernel's installation key
    assert rep.ok and rep.uncovered == 0, rep.message


def test_a_kernel_that_decrypted_nothing_writes_no_checkpoint(tmp_path):
    expected = tmp_path / "kernel"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEC_")}
    env.update(
        MEDSEC_DATA_DIR=str(expected / "medsec"),
        IPYTHONDIR=str(expected / "ipython"),
        JUPYTER_RUNTIME_DIR=str(expected / "runtime"),
    )
    (expected / "runtime").mkdir(parents=True)
    km = KernelManager(kernel_name="python3", connection_file=str(expected / "runtime" / f"kernel-{uuid.uuid4()}.json"))
    km.start_kernel(env=env, extra_arguments=["--HistoryManager.hist_file=:memory:"])
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("import medsec_nb.notebook.magics", timeout=60, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok"
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=False)
    assert not (expected / "medsec" / "audit.checkpoints").exists()
