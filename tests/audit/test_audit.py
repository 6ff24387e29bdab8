"""The audit log: records, chain, concurrency, tamper detection, checkpoints, exports, CLI, vector.

Real files, real processes, real keys; nothing is mocked. Every test runs with its own
medsec data folder (``MEDSEC_DATA_DIR``), so the user's real log and keys are never touched.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import pwd
import stat
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from Crypto.Signature import eddsa

from medsec_nb.audit import (
    AuditIntegrityError,
    AuditLog,
    AuditRecordError,
    AuditUnavailableError,
    export,
    pseudonym,
    set_event_logger,
    verify_log,
)
from medsec_nb.audit import checkpoint as ckpt
from medsec_nb.audit.record import GENESIS, canonical, record_hash
from medsec_nb.cli.audit import add_audit_commands
from medsec_nb.keys.identity import Recipient, generate_identity, save_identity

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "audit"
UID = "1.2.826.0.1.3680043.8.498.777"
SHA = "ab" * 32
KEY_ID = "x25519:00112233445566778899aabbccddeeff"
ENV = (
    "MEDSEC_AUDIT_LOG",
    "MEDSEC_AUDIT_CHECKPOINTS",
    "MEDSEC_AUDIT_CHECKPOINT_KEY",
    "MEDSEC_AUDIT_CHECKPOINT_EVERY",
    "JUPYTERHUB_USER",
    "JPY_SESSION_NAME",
)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch) -> Path:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "data"
    monkeypatch.setenv("MEDSEC_DATA_DIR", str(folder))
    return folder


def study(**kw) -> dict:
    return {"container_sha256": SHA, "study_uid": UID, "instances": 6, "patient_pseudonym": pseudonym("PAT-0042"), **kw}


def fill(log: AuditLog, n: int, **kw) -> list[dict]:
    args = dict(action="open", outcome="success", purpose="HRESCH", key_id=KEY_ID, study=study())
    args.update(kw)
    return [log.append(**args) for _ in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# ---------------------------------------------------------------- records and chain


def test_record_holds_who_why_what_where_and_chains(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice@hub")
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    first, second = fill(log, 2)
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["prev"] == GENESIS and second["prev"] == first["hash"]
    assert first["hash"] == record_hash(first)
    assert first["who"]["hub_user"] == "alice@hub" and first["who"]["key_id"] == KEY_ID
    assert first["who"]["os_user"]
    assert first["why"] == {"purpose": "HRESCH", "text": None}
    assert first["study"] == study()
    assert first["where"]["pid"] == os.getpid() and first["where"]["host"]
    assert first["where"]["version"] == __import__("medsec_nb").__version__
    raw = lines(log.path)
    assert raw[0] == canonical(first) + b"\n"  # one canonical JSON object per line
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert "PAT-0042" not in log.path.read_text()
    assert verify_log(log.path).ok


def test_default_locations_follow_environment(data_dir, tmp_path, monkeypatch):
    log = AuditLog()
    assert log.path == data_dir / "audit.jsonl" and log.checkpoints_path == data_dir / "audit.checkpoints"
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "elsewhere.jsonl"))
    monkeypatch.setenv("MEDSEC_AUDIT_CHECKPOINTS", str(tmp_path / "cp" / "heads.jsonl"))
    log = AuditLog()
    assert log.path == tmp_path / "elsewhere.jsonl" and log.checkpoints_path == tmp_path / "cp" / "heads.jsonl"


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(study={"patient_name": "Doe^John"}), "unknown field"),
        (dict(study={"patient_pseudonym": "PAT-0042"}), "pseudonym"),
        (dict(study={"study_uid": "not a uid"}), "DICOM UID"),
        (dict(purpose=""), "purpose of use is required"),
        (dict(event="999999"), "unknown audit event"),
        (dict(outcome="ok"), "outcome"),
        (dict(detail={"ratio": 0.5}), "detail.ratio"),
        (dict(detail={"blob": b"\x00"}), "detail.blob"),
    ],
)
def test_malformed_records_are_refused(tmp_path, bad, match):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(AuditRecordError, match=match):
        fill(log, 1, **bad)
    assert not log.path.exists() or log.path.stat().st_size == 0


def test_pseudonym_is_keyed_stable_and_private(data_dir):
    p = pseudonym("PAT-0042")
    assert p == pseudonym("  PAT-0042 ") and p != pseudonym("PAT-0043") and len(p) == 32
    secret = data_dir / "audit-pseudonym.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes()) == 32


def test_unwritable_log_is_unavailable(tmp_path):
    (tmp_path / "isdir.jsonl").mkdir()
    with pytest.raises(AuditUnavailableError, match="must not proceed"):
        fill(AuditLog(tmp_path / "isdir.jsonl"), 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditUnavailableError, match=str(blocker)):
        fill(AuditLog(blocker / "audit.jsonl"), 1)


def test_unreadable_last_record_refuses_to_append(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 2)
    with open(log.path, "ab") as fh:
        fh.write(b"{not json}\n")
    with pytest.raises(AuditUnavailableError, match="last record is unreadable"):
        fill(log, 1)


def test_torn_last_line_is_cut_before_the_next_append(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 3)
    with open(log.path, "ab") as fh:
        fh.write(lines(log.path)[-1][:100])  # a writer died mid-record
    rep = verify_log(log.path)
    assert not rep.ok and rep.first_bad_line == 4 and "incomplete" in rep.message
    (rec,) = fill(log, 1)
    assert rec["seq"] == 4
    assert verify_log(log.path).ok and len(lines(log.path)) == 4


def test_tail_read_finds_long_last_record(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 1, detail={"note": "x" * 15000})
    fill(log, 1, detail={"note": "y" * 15000})
    assert fill(log, 1)[0]["seq"] == 3 and verify_log(log.path).ok


# ---------------------------------------------------------------- concurrency (real processes)


def _writer(path: str, n: int) -> None:
    log = AuditLog(path, checkpoint_every=50)
    for _ in range(n):
        log.append(action="access", outcome="success", purpose="HRESCH", study=study())


def test_concurrent_writers_never_fork_or_lose_records(tmp_path):
    procs, each = 4, 200
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(str(path), each)) for _ in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    records = [json.loads(x) for x in lines(path)]
    assert len(records) == procs * each
    assert [r["seq"] for r in records] == list(range(1, procs * each + 1))
    assert sorted(Counter(r["where"]["pid"] for r in records).values()) == [each] * procs
    rep = verify_log(path)
    assert rep.ok, rep.message
    assert rep.records == procs * each and rep.checkpoints == procs * each // 50


# ---------------------------------------------------------------- tamper detection


@pytest.fixture
def signed_log(tmp_path) -> AuditLog:
    """Ten records, checkpoints after 4 and 8 (automatic) and 10 (on demand)."""
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=4)
    fill(log, 10)
    log.checkpoint()
    assert verify_log(log.path).ok
    return log


def _edit_field(raw: list[bytes]) -> list[bytes]:
    rec = json.loads(raw[4])
    rec["who"]["os_user"] = "mallory"
    raw[4] = canonical(rec) + b"\n"
    return raw


def _edit_and_rehash(raw: list[bytes]) -> list[bytes]:
    rec = json.loads(raw[4])
    rec["outcome"] = "failure"
    rec["hash"] = record_hash(rec)
    raw[4] = canonical(rec) + b"\n"
    return raw


def _reorder(raw: list[bytes]) -> list[bytes]:
    raw[4], raw[5] = raw[5], raw[4]
    return raw


def _cut_line(raw: list[bytes]) -> list[bytes]:
    raw[4] = raw[4][: len(raw[4]) // 2] + b"\n"
    return raw


def _reformat(raw: list[bytes]) -> list[bytes]:
    raw[4] = json.dumps(json.loads(raw[4]), indent=1).replace("\n", " ").encode() + b"\n"
    return raw


@pytest.mark.parametrize(
    "tamper, line, words",
    [
        (_edit_field, 5, "hash mismatch"),
        (_edit_and_rehash, 5, "does not link to line 5"),
        (lambda raw: raw[:4] + raw[5:], 5, "sequence number 6 where 5 belongs"),
        (_reorder, 5, "sequence number 6 where 5 belongs"),
        (_cut_line, 5, "not a JSON record"),
        (_reformat, 5, "canonical"),
        (lambda raw: raw + raw[-1:], 11, "sequence number 10 where 11 belongs"),
    ],
)
def test_chain_damage_names_the_line(signed_log, tamper, line, words):
    signed_log.path.write_bytes(b"".join(tamper(lines(signed_log.path))))
    rep = verify_log(signed_log.path)
    assert not rep.ok and rep.first_bad_line == line, rep.message
    assert words in rep.message and f"line {line}" in rep.message


def test_tail_truncation_is_caught_by_a_checkpoint(signed_log):
    signed_log.path.write_bytes(b"".join(lines(signed_log.path)[:7]))  # chain of 7 is valid on its own
    rep = verify_log(signed_log.path)
    assert not rep.ok and rep.first_bad_line == 8 and rep.records == 7
    assert "truncated" in rep.message and "lines 8-8" in rep.message


def _rechain(raw: list[bytes], change) -> bytes:
    out, prev = [], GENESIS
    for i, line in enumerate(raw):
        rec = json.loads(line)
        change(i, rec)
        rec["prev"] = prev
        rec["hash"] = prev = record_hash(rec)
        out.append(canonical(rec) + b"\n")
    return b"".join(out)


def test_rewritten_and_rechained_log_is_caught_by_checkpoints(signed_log):
    def change(i, rec):
        if i == 5:
            rec["outcome"] = "denied"  # line 6: after checkpoint 4, before checkpoint 8

    signed_log.path.write_bytes(_rechain(lines(signed_log.path), change))
    assert verify_log(signed_log.path, checkpoints=signed_log.path.with_name("none")).ok  # valid-looking
    rep = verify_log(signed_log.path)
    assert not rep.ok and rep.first_bad_line == 5, rep.message
    assert "rewritten" in rep.message and "lines 5-8" in rep.message


def test_log_replaced_from_the_first_record_is_caught(signed_log):
    def change(i, rec):
        rec["who"]["os_user"] = "mallory"

    signed_log.path.write_bytes(_rechain(lines(signed_log.path), change))
    rep = verify_log(signed_log.path)
    assert not rep.ok and rep.first_bad_line == 1 and "record 1 differs" in rep.message


def test_altered_or_foreign_checkpoints_fail(signed_log, tmp_path):
    cp = signed_log.checkpoints_path
    good = cp.read_text()
    note = json.loads(good.splitlines()[0])["note"]
    cp.write_text(good.replace(json.dumps(note)[1:-1], json.dumps(note.replace("\n4\n", "\n3\n"))[1:-1], 1))
    rep = verify_log(signed_log.path)
    assert not rep.ok and "checkpoint 1" in rep.message and "invalid" in rep.message
    cp.write_text(good)
    stranger = generate_identity("ed25519").public
    rep = verify_log(signed_log.path, public_key=stranger)
    assert not rep.ok and "not signed by a trusted key" in rep.message
    cp.write_text(good + "garbage\n")
    rep = verify_log(signed_log.path)
    assert not rep.ok and "line 4 is not a checkpoint" in rep.message


def test_checkpoint_key_is_created_private_once(data_dir, tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    with pytest.raises(AuditRecordError, match="empty"):
        log.checkpoint()
    fill(log, 3)
    cp = log.checkpoint()
    key, pub = data_dir / "audit-checkpoint.key", data_dir / "audit-checkpoint.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and pub.exists()
    assert cp["size"] == 3 and cp["bytes"] == log.path.stat().st_size and cp["key_id"].startswith("ed25519:")
    assert cp["note"].startswith(f"medsec-nb/audit/v1/{json.loads(lines(log.path)[0])['hash'][:32]}\n3\n")
    again = log.checkpoint()
    assert again["key_id"] == cp["key_id"]
    assert ckpt.verify(again["note"], ckpt.trusted_keys(pub))[0].size == 3


def test_checkpoint_of_a_missing_log_creates_nothing(tmp_path):
    """A kernel checkpoints at exit every log it opened studies with; a notebook's temporary log
    folder, removed since, must not come back as an empty log."""
    folder = tmp_path / "gone"
    log = AuditLog(folder / "audit.jsonl", checkpoint_every=0)
    with pytest.raises(AuditRecordError, match="empty"):
        log.checkpoint(generate_identity("ed25519"))
    assert not folder.exists()


def test_checkpoint_with_a_steward_key(tmp_path):
    steward = generate_identity("ed25519")
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 2)
    log.checkpoint(steward)
    assert not verify_log(log.path).ok  # not the installation's key
    assert verify_log(log.path, public_key=[steward.public]).ok
    with pytest.raises(AuditRecordError, match="ed25519"):
        log.checkpoint(generate_identity("x25519"))


# ---------------------------------------------------------------- reading, following, events


def test_records_filters(tmp_path, monkeypatch):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 2)
    monkeypatch.setenv("JUPYTERHUB_USER", "bob")
    fill(log, 1, study=study(study_uid="1.2.3"))
    assert len(list(log.records())) == 3
    assert [r["seq"] for r in log.records(study="1.2.3")] == [3]
    assert len(list(log.records(study=SHA))) == 3
    assert list(log.records(user="bob")) == []  # $JUPYTERHUB_USER is a claim, not the user
    assert len(list(log.records(user=pwd.getpwuid(os.geteuid()).pw_name))) == 3
    assert len(list(log.records(since="1h"))) == 3
    assert list(log.records(since=datetime.now(timezone.utc) + timedelta(minutes=1))) == []
    assert len(list(log.records(since="2000-01-01"))) == 3
    with pytest.raises(AuditRecordError, match="cannot read the time"):
        list(log.records(since="yesterday"))


def test_follow_returns_new_complete_records(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    assert log.follow() == ([], 0)
    fill(log, 2)
    recs, offset = log.follow()
    assert [r["seq"] for r in recs] == [1, 2]
    with open(log.path, "ab") as fh:
        fh.write(b'{"partial')
    assert log.follow(offset) == ([], offset)


def test_records_are_emitted_as_jupyter_events(tmp_path):
    from jupyter_events import EventLogger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = EventLogger()
    logger.register_handler(handler)
    set_event_logger(logger)
    try:
        (rec,) = fill(AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0), 1)
    finally:
        set_event_logger(None)
    event = json.loads(stream.getvalue().splitlines()[-1])
    assert event["__schema__"] == "urn:medsec-nb:events:audit:v1"
    assert event["hash"] == rec["hash"] and event["study"]["study_uid"] == UID


def test_context_inside_ipython(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("JPY_SESSION_NAME", "/home/alice/lung.ipynb")
    shell = InteractiveShell.instance()
    shell.config.IPKernelApp.connection_file = "/run/user/1000/jupyter/runtime/kernel-6f1c2b7e-0c1d-4e43.json"
    try:
        shell.user_ns.update(log=AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0), study=study())
        shell.run_cell("1 + 1", store_history=True)
        result = shell.run_cell(
            "rec = log.append(action='open', outcome='success', purpose='TREAT', study=study)", store_history=True
        )
        assert result.success, result.error_in_exec
        where = shell.user_ns["rec"]["where"]
        assert where["cell"] == result.execution_count == 2  # In [2]
        assert where["notebook"] == "/home/alice/lung.ipynb" and where["kernel_id"] == "6f1c2b7e-0c1d-4e43"
    finally:
        InteractiveShell.clear_instance()


# ---------------------------------------------------------------- exports


@pytest.fixture
def varied_log(tmp_path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl", checkpoint_every=0)
    fill(log, 1, purpose_text="nodule study 17")
    fill(
        log,
        1,
        event="110113",
        action="reveal-tag",
        outcome="denied",
        purpose="EDU",
        key_id=None,
        detail={"tag": "PatientName", "reason": "denied: no rule allows it"},
    )
    fill(
        log,
        1,
        event="110106",
        action="export",
        detail={"destination": "file:///tmp/out"},
        study={"container_sha256": SHA},
    )
    return log


def test_fhir_bundle_has_the_required_elements(varied_log):
    recs = list(varied_log.records())
    bundle = json.loads(json.dumps(export.fhir_bundle(recs, "2025-01-01T00:00:00Z")))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection" and len(bundle["entry"]) == 3
    for entry, rec in zip(bundle["entry"], recs):
        ev = entry["resource"]
        assert ev["resourceType"] == "AuditEvent" and ev["id"] == rec["hash"]
        assert ev["type"]["system"] == export.DCM and ev["type"]["code"] == rec["event"]
        assert ev["recorded"] == rec["time"]
        assert [a["requestor"] for a in ev["agent"]].count(True) == 1
        assert ev["agent"][0]["who"]["identifier"]["value"] == rec["who"]["os_user"]
        assert ev["source"]["observer"]["display"].startswith("medsec-nb@")
        assert ev["purposeOfEvent"][0]["coding"][0]["code"] == rec["why"]["purpose"]
        assert ev["entity"]
    first, denied, exported = (e["resource"] for e in bundle["entry"])
    assert first["purposeOfEvent"][0]["coding"][0]["system"] == export.ACT_REASON
    assert first["purposeOfEvent"][0]["text"] == "nodule study 17"
    assert first["entity"][0]["what"]["identifier"]["value"] == f"urn:oid:{UID}"
    assert {e["role"]["code"] for e in first["entity"]} == {"3", "1", "13"}
    assert denied["outcome"] == "4" and denied["outcomeDesc"].startswith("denied")
    assert denied["subtype"][0]["code"] == "110132"
    assert denied["purposeOfEvent"][0]["coding"][0]["system"] == export.LOCAL_PURPOSE
    assert exported["agent"][-1]["type"]["coding"][0]["code"] == "110152"


def test_dicom_audit_messages_parse_with_required_elements(varied_log):
    recs = list(varied_log.records())
    root = ET.fromstring(export.dicom_xml(recs))
    msgs = root.findall("AuditMessage")
    assert root.tag == "AuditMessages" and len(msgs) == 3
    for msg, rec in zip(msgs, recs):
        assert [c.tag for c in msg][:2] == ["EventIdentification", "ActiveParticipant"]
        ev = msg.find("EventIdentification")
        assert ev.get("EventDateTime") == rec["time"]
        assert ev.find("EventID").get("csd-code") == rec["event"]
        assert ev.find("EventID").get("codeSystemName") == "DCM"
        assert ev.find("PurposeOfUse").get("csd-code") == rec["why"]["purpose"]
        users = msg.findall("ActiveParticipant")
        assert users[0].get("UserIsRequestor") == "true" and users[0].get("UserID") == rec["who"]["os_user"]
        assert msg.find("AuditSourceIdentification").get("AuditSourceID")
        objs = msg.findall("ParticipantObjectIdentification")
        assert objs and all(
            o.get("ParticipantObjectID") and o.find("ParticipantObjectIDTypeCode") is not None for o in objs
        )
    first, denied, exported = msgs
    assert first.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    study_obj = first.findall("ParticipantObjectIdentification")[0]
    assert study_obj.get("ParticipantObjectID") == UID
    assert study_obj.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    assert study_obj.find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "6"
    detail = study_obj.find("ParticipantObjectDetail")
    assert base64.b64decode(detail.get("value")).decode() == SHA
    patient = first.findall("ParticipantObjectIdentification")[1]
    assert (patient.get("ParticipantObjectTypeCode"), patient.get("ParticipantObjectTypeCodeRole")) == ("1", "1")
    assert denied.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert denied.find("EventIdentification/EventOutcomeDescription").text.startswith("denied")
    assert exported.find("EventIdentification/EventID").get("originalText") == "Export"
    assert exported.find("ActiveParticipant/MediaIdentifier/MediaType").get("csd-code") == "110037"


# ---------------------------------------------------------------- CLI (argparse harness)


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="medsec")
    add_audit_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_cli_show_verify_checkpoint_export(varied_log, tmp_path, capsys):
    log = ["--log", varied_log.path]
    assert run_cli("audit", "show", *log) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["SEQ", "TIME", "(UTC)"] and len(out) == 4 and "reveal-tag" in out[2]
    run_cli("audit", "show", *log, "--json", "--study", SHA, "--since", "1d")
    shown = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in shown] == [1, 2, 3]

    key = tmp_path / "steward"
    (tmp_path / "pw").write_text("kp-Zebra-5531\n")
    save_identity(generate_identity("ed25519"), key, "kp-Zebra-5531")
    assert (
        run_cli("audit", "checkpoint", *log, "--identity", f"{key}.key", "--key-passphrase-file", tmp_path / "pw") == 0
    )
    assert "\n3\n" in capsys.readouterr().out
    with pytest.raises(AuditIntegrityError, match="not signed by a trusted key"):
        run_cli("audit", "verify", *log)
    assert run_cli("audit", "verify", *log, "--public-key", f"{key}.pub") == 0
    assert capsys.readouterr().out.startswith("OK ")

    for fmt, name in (("fhir", "a.json"), ("dicom", "a.xml")):
        assert run_cli("audit", "export", *log, "--format", fmt, "-o", tmp_path / name) == 0
    assert capsys.readouterr().out.count("wrote 3 record(s)") == 2
    assert json.loads((tmp_path / "a.json").read_text())["resourceType"] == "Bundle"
    assert len(ET.parse(tmp_path / "a.xml").getroot()) == 3
    run_cli("audit", "export", *log, "--format", "fhir", "--user", "nobody")
    assert json.loads(capsys.readouterr().out)["entry"] == []

    lines_ = lines(varied_log.path)
    varied_log.path.write_bytes(lines_[0] + lines_[2])
    with pytest.raises(AuditIntegrityError, match="line 2"):
        run_cli("audit", "verify", *log, "--public-key", f"{key}.pub")


def test_cli_rejects_bad_input(varied_log):
    with pytest.raises(SystemExit):
        run_cli("audit", "export", "--log", varied_log.path, "--format", "csv")
    with pytest.raises(AuditRecordError, match="cannot read the time"):
        run_cli("audit", "show", "--log", varied_log.path, "--since", "last tuesday")


# ---------------------------------------------------------------- the committed test vector


def test_vector_verifies_and_regenerates_byte_for_byte():
    spec = importlib.util.spec_from_file_location("make_audit_vector", VECTOR / "make_vector.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    log, cps, vector = maker.build()
    assert log == (VECTOR / "audit.jsonl").read_bytes()
    assert cps == (VECTOR / "audit.checkpoints").read_bytes()
    assert vector == json.loads((VECTOR / "vector.json").read_text(encoding="utf-8"))
    key = json.loads((VECTOR / "key.json").read_text())
    public = Recipient(eddsa.import_public_key(bytes.fromhex(key["public"])))
    assert public.key_id == vector["checkpoint"]["key_id"]
    rep = verify_log(VECTOR / "audit.jsonl", public_key=public)
    assert rep.ok and rep.records == 3 and rep.checkpoints == 1, rep.message
    first = json.loads(lines(VECTOR / "audit.jsonl")[0])
    assert first["hash"] == vector["hashes"][0]
    assert canonical({k: v for k, v in first.items() if k != "hash"}).decode() == vector["first_record_hashed_bytes"]
