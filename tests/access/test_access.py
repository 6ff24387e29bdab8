"""Policy and audit wired into every decryption path: open_study, bulk reads, the CLI."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

import medsec_nb
from medsec_nb.access.gate import container_id
from medsec_nb.audit import AuditLog, verify_log

PROCS, OPENS = 3, 4


def _records(log: Path) -> list[dict]:
    return list(AuditLog(log).records())


@pytest.fixture()
def log(tmp_path):
    return tmp_path / "audit.jsonl"


def test_purpose_is_required(signed_container, identities, monkeypatch, log):
    monkeypatch.delenv("MEDSEC_PURPOSE")
    with pytest.raises(medsec_nb.MedsecError, match="purpose of use is required"):
        medsec_nb.open_study(signed_container, identities.x25519, audit_log=log)
    with pytest.raises(medsec_nb.MedsecError, match="short code"):
        medsec_nb.open_study(signed_container, identities.x25519, purpose="drop table;", audit_log=log)


def test_open_and_bulk_reads_are_recorded(signed_container, identities, log):
    with medsec_nb.open_study(
        signed_container, identities.x25519, purpose="EDU", purpose_text="course 12", audit_log=log
    ) as study:
        assert study.purpose == "EDU"
        recs = _records(log)
        assert len(recs) == 1
        rec = recs[0]
        assert (rec["action"], rec["outcome"], rec["event"]) == ("open", "success", "110103")
        assert rec["why"]["purpose"] == "EDU" and rec["why"]["text"] == "course 12"
        assert rec["who"]["key_id"] == identities.x25519.key_id
        assert rec["study"]["container_sha256"] == container_id(signed_container)
        assert rec["study"]["study_uid"] == study.series[0].entries[0]["study"]
        study.series[0].volume(progress=False)
        list(study.series[0])
        study.series[0][0]  # single instances are covered by the open record
    recs = _records(log)
    assert [r["action"] for r in recs] == ["open", "decrypt-series", "decrypt-series"]
    assert recs[1]["study"]["instances"] == len(study.series[0])
    assert verify_log(log).ok


def test_failures_are_recorded_without_secrets(signed_container, identities, log):
    with pytest.raises(medsec_nb.NoMatchingRecipientError):
        medsec_nb.open_study(signed_container, identities.other_x25519, audit_log=log)
    (rec,) = _records(log)
    assert rec["outcome"] == "failure" and rec["detail"]["error"] == "NoMatchingRecipientError"
    text = log.read_text()
    assert identities.other_x25519.key.export_key(format="PEM").splitlines()[1] not in text


def test_denied_access_records_denial_and_unwraps_nothing(signed_container, identities, tmp_path, log):
    policy = tmp_path / "site.csv"
    policy.write_text("p, someone-else, *, decrypt, *, *, allow\n")
    key_path, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "me", passphrase="kp-xyz-123")

    def must_not_ask():
        raise AssertionError("the key was unlocked although the policy denies access")

    with pytest.raises(medsec_nb.PolicyDeniedError, match="no rule allows"):
        medsec_nb.open_study(signed_container, key_path, identity_passphrase=must_not_ask, audit_log=log, policy=policy)
    (rec,) = _records(log)
    assert (rec["outcome"], rec["event"]) == ("denied", "110113")
    assert "no rule allows" in rec["detail"]["reason"]


def test_denied_by_study_uid_after_index(signed_container, identities, tmp_path, log):
    with medsec_nb.open_study(signed_container, identities.x25519, audit_log=log) as st:
        uid = st.series[0].entries[0]["study"]
    policy = tmp_path / "site.csv"
    policy.write_text(f"p, @local, *, *, *, *, allow\np, @local, {uid}, decrypt, *, *, deny\n")
    with pytest.raises(medsec_nb.PolicyDeniedError, match="forbids"):
        medsec_nb.open_study(signed_container, identities.x25519, audit_log=log, policy=policy)
    assert [r["outcome"] for r in _records(log)] == ["success", "denied"]


def test_unrecordable_access_does_not_happen(signed_container, identities, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log's folder should be")
    with pytest.raises(medsec_nb.AuditUnavailableError):
        medsec_nb.open_study(signed_container, identities.x25519, audit_log=blocked / "audit.jsonl")


def test_bulk_read_not_returned_when_unrecordable(signed_container, identities, tmp_path):
    log = tmp_path / "logdir" / "audit.jsonl"
    with medsec_nb.open_study(signed_container, identities.x25519, audit_log=log) as st:
        os.chmod(log, 0o400)
        os.chmod(log.parent, 0o500)
        try:
            if os.access(log, os.W_OK):  # root ignores modes: make the path unusable instead
                os.chmod(log.parent, 0o700)
                log.unlink()
                log.mkdir()
            with pytest.raises(medsec_nb.AuditUnavailableError):
                st.series[0].volume(progress=False)
        finally:
            os.chmod(log.parent, 0o700)


def _opener(args):
    path, key, log = args
    for _ in range(OPENS):
        with medsec_nb.open_study(path, key, audit_log=log) as st:
            st.series[0].header(0)


def test_concurrent_processes_lose_no_record(signed_container, identities, tmp_path, log):
    key, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "k")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCS) as pool:
        pool.map(_opener, [(str(signed_container), str(key), str(log))] * PROCS)
    recs = _records(log)
    assert len(recs) == PROCS * OPENS
    assert sorted(r["seq"] for r in recs) == list(range(1, PROCS * OPENS + 1))
    assert verify_log(log).ok


def test_cli_paths_are_audited(signed_container, identities, tmp_path):
    key, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "k")
    env = {**os.environ, "MEDSEC_AUDIT_LOG": str(tmp_path / "cli.jsonl")}
    env.pop("MEDSEC_PURPOSE")
    medsec = [str(Path(sys.executable).with_name("medsec"))]
    run = lambda *a: subprocess.run(medsec + [str(x) for x in a], capture_output=True, text=True, env=env, timeout=120)
    r = run("verify", signed_container, "-i", key, "-q")
    assert r.returncode == 1 and "purpose of use is required" in r.stderr
    assert run("verify", signed_container, "-i", key, "-q", "--purpose", "HRESCH").returncode == 0
    assert (
        run("decrypt", signed_container, "-i", key, "-o", tmp_path / "out", "-q", "--purpose", "TREAT").returncode == 0
    )
    r = run("audit", "show")
    assert r.returncode == 0 and "export" in r.stdout and "verify" in r.stdout
    r = run("audit", "verify")
    assert r.returncode == 0, r.stderr
    actions = [(x["action"], x["event"]) for x in AuditLog(tmp_path / "cli.jsonl").records()]
    assert actions == [("verify-open", "110103"), ("verify", "110103"), ("export-open", "110106"), ("export", "110106")]


def test_reveal_is_authorised_and_recorded_without_the_value(signed_container, identities, tmp_path, log):
    with medsec_nb.open_study(signed_container, identities.x25519, audit_log=log) as st:
        s = st.series[0]
        name = s.reveal(0, "PatientName")
        assert name == str(s.header(0).PatientName) and name
        assert "redacted" in repr(s.header(0)) and name not in repr(s.header(0))
    rec = _records(log)[-1]
    assert rec["action"] == "reveal-tag" and rec["detail"]["tag"] == "PatientName"
    assert name not in log.read_text()
    policy = tmp_path / "no-reveal.csv"
    policy.write_text("p, @local, *, decrypt, *, *, allow\n")
    with medsec_nb.open_study(signed_container, identities.x25519, audit_log=log, policy=policy) as st:
        with pytest.raises(medsec_nb.PolicyDeniedError):
            st.series[0].reveal(0, "PatientName")
    rec = _records(log)[-1]
    assert (rec["action"], rec["outcome"]) == ("reveal-tag", "denied")
