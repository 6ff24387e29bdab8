"""The access policy decides pulls, pushes and receivers (docs/PACS.md, "Who may pull, push and receive"), against
a real Orthanc: ``pull`` per study before any instance is fetched, ``pull-by-patient`` before a patient-level query
reaches the PACS, ``push`` before anything is de-identified or sent, ``receive`` before a receiver listens. A denial
is one line, recorded (110113) with no accession number or patient ID, and leaves nothing behind; the subject is
the OS user whatever the environment says; with a key service, the service decides and its log records."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from medsec_nb.access.policy import DEFAULT_POLICY, Policy, local_user
from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main as cli_main
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.core.errors import PolicyDeniedError
from medsec_nb.keys.identity import save_identity
from medsec_nb.pacs.dicomweb import DicomWeb
from medsec_nb.pacs.peer import StudyQuery
from medsec_nb.pacs.pull import pull_study
from medsec_nb.pacs.push import push
from medsec_nb.pacs.receive import Receiver
from medsec_nb.testdata import synthesize_datasets

from .orthanc import Modality, free_port

ME = local_user()
SECRET = b"research project secret, 32 b.."


def _policy(folder: Path, name: str, *rules: str) -> Path:
    path = folder / f"{name}.csv"
    path.write_text("\n".join(rules) + "\n")
    return path


def _watched(orthanc) -> tuple[DicomWeb, list[str]]:
    """A DICOMweb peer whose every HTTP request to Orthanc is listed (its URL), to show what was asked."""
    session = requests.Session()
    urls: list[str] = []
    session.hooks["response"].append(lambda r, *args, **kwargs: urls.append(r.request.url))
    return DicomWeb(orthanc.dicomweb_url, session=session), urls


def _retrieves(urls: list[str]) -> list[str]:
    """The WADO-RS requests (``/studies/{uid}`` with no query): anything that fetched instances."""
    return [u for u in urls if "/studies/" in u and "?" not in u]


def _files_under(*folders: Path) -> set[str]:
    return {os.path.join(d, f) for folder in folders for d, _, fs in os.walk(folder) for f in fs}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A fresh TMPDIR and working directory, both checked for leftovers."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.chdir(cwd)
    return tmp, cwd


def _denied(log: Path, action: str) -> dict:
    (rec,) = [r for r in AuditLog(log).records() if r["outcome"] == "denied"]
    assert rec["action"] == action and rec["event"] == "110113"
    assert rec["who"]["os_user"] == ME
    return rec


def _no_query_values(log: Path, *studies) -> None:
    text = log.read_text()
    for study in studies:
        assert study.accession not in text and study.patient_id not in text and study.patient_name not in text


def test_the_default_policy_lets_the_local_user_pull_push_and_receive():
    policy = Policy.load(DEFAULT_POLICY)
    for action in ("pull", "pull-by-patient", "push", "receive"):
        assert policy.check(ME, action, "*", "TREAT").allowed
        assert policy.check(ME, action, "1.2.826.0.1.3680043.8.498.1", "HRESCH").allowed
        assert not policy.check("somebody-else", action, "*", "TREAT").allowed


def test_pull_is_allowed_for_one_study_and_not_another(orthanc, pacs_studies, scratch, identities):
    ct, mr = pacs_studies["ct"], pacs_studies["mr"]
    tmp, cwd = scratch
    policy = _policy(cwd.parent, "site", f"p, {ME}, {ct.study_uid}, pull, TREAT, *, allow")
    log = cwd.parent / "audit.jsonl"
    peer, urls = _watched(orthanc)
    kw = {"purpose": "TREAT", "log": AuditLog(log), "policy": policy, "progress": False}

    with pytest.raises(PolicyDeniedError) as caught:
        pull_study(peer, StudyQuery(accession=mr.accession), "mr.msec", [identities.x25519.public], **kw)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"denied: no rule allows {ME} to pull {mr.study_uid} for purpose TREAT")
    assert mr.accession not in message
    assert urls and _retrieves(urls) == []  # found (QIDO-RS), never fetched (no WADO-RS request)
    assert _files_under(tmp, cwd) == set()
    rec = _denied(log, "pull")
    assert rec["study"]["study_uid"] == mr.study_uid
    assert rec["detail"]["rule"] is None and rec["detail"]["peer"] == f"DICOMweb {orthanc.dicomweb_url}"

    dest = pull_study(peer, StudyQuery(accession=ct.accession), "ct.msec", [identities.x25519.public], **kw)
    assert _retrieves(urls) == [f"{orthanc.dicomweb_url}/studies/{ct.study_uid}"]
    assert _files_under(tmp, cwd) == {str(cwd / dest)}
    (ok,) = [r for r in AuditLog(log).records() if r["outcome"] == "success"]
    assert ok["action"] == "pull" and ok["study"]["study_uid"] == ct.study_uid
    _no_query_values(log, ct, mr)


def test_a_patient_level_pull_needs_its_own_allow(orthanc, pacs_studies, scratch, identities):
    """Where study pulls are allowed and patient searches are not, a pull by patient ID never reaches the PACS."""
    mr = pacs_studies["mr"]
    tmp, cwd = scratch
    log = cwd.parent / "audit.jsonl"
    studies_only = _policy(cwd.parent, "studies", f"p, {ME}, *, pull, TREAT, *, allow")
    peer, urls = _watched(orthanc)
    kw = {"purpose": "TREAT", "log": AuditLog(log), "progress": False}

    with pytest.raises(PolicyDeniedError, match=rf"^denied: no rule allows {ME} to pull-by-patient \* for purpose"):
        pull_study(
            peer, StudyQuery(patient_id=mr.patient_id), "mr.msec", [identities.x25519], policy=studies_only, **kw
        )
    assert urls == []  # not even the search was sent
    assert _files_under(tmp, cwd) == set()
    rec = _denied(log, "pull-by-patient")
    assert rec["study"] is None or not any(rec["study"].values())
    assert rec["detail"]["query"] == "patient-id"
    _no_query_values(log, mr)

    # the same study by its accession number is a study-level pull: allowed
    pull_study(
        peer, StudyQuery(accession=mr.accession), "by-accession.msec", [identities.x25519], policy=studies_only, **kw
    )
    # a project's rule does not allow patient searches: the object of one is every study (*)
    project = _policy(
        cwd.parent,
        "project",
        f"p, {ME}, *, pull, TREAT, *, allow",
        f"p, {ME}, proj-mr, pull-by-patient, TREAT, *, allow",
        f"g2, {mr.study_uid}, proj-mr",
    )
    with pytest.raises(PolicyDeniedError, match="pull-by-patient"):
        pull_study(peer, StudyQuery(patient_id=mr.patient_id), "mr.msec", [identities.x25519], policy=project, **kw)
    searches = _policy(
        cwd.parent, "searches", f"p, {ME}, *, pull, TREAT, *, allow", f"p, {ME}, *, pull-by-patient, TREAT, *, allow"
    )
    pull_study(
        peer, StudyQuery(patient_id=mr.patient_id), "by-patient.msec", [identities.x25519], policy=searches, **kw
    )
    assert _files_under(tmp, cwd) == {str(cwd / "by-accession.msec"), str(cwd / "by-patient.msec")}
    assert [r["outcome"] for r in AuditLog(log).records()] == ["denied", "success", "denied", "success"]
    _no_query_values(log, mr)


def test_identity_comes_from_the_os_not_the_environment(orthanc, pacs_studies, scratch, identities, monkeypatch):
    ct, mr = pacs_studies["ct"], pacs_studies["mr"]
    tmp, cwd = scratch
    policy = _policy(cwd.parent, "site", "p, alice, *, *, *, *, allow", f"p, {ME}, {ct.study_uid}, pull, *, *, allow")
    for var in ("USER", "LOGNAME", "JUPYTERHUB_USER"):
        monkeypatch.setenv(var, "alice")
    log = cwd.parent / "audit.jsonl"
    with pytest.raises(PolicyDeniedError, match=rf"no rule allows {ME} to pull {mr.study_uid}"):
        pull_study(
            DicomWeb(orthanc.dicomweb_url),
            StudyQuery(study_uid=mr.study_uid),
            "mr.msec",
            [identities.x25519],
            purpose="TREAT",
            log=AuditLog(log),
            policy=policy,
            progress=False,
        )
    assert _denied(log, "pull")["who"]["os_user"] == ME != "alice"
    assert _files_under(tmp, cwd) == set()


@pytest.mark.slow  # runs the command
def test_cli_pull_over_c_get_denied_is_one_line_and_writes_nothing(orthanc, pacs_studies, scratch, identities):
    mr = pacs_studies["mr"]
    tmp, cwd = scratch
    orthanc.set_modality("medsec", Modality("MEDSEC", free_port()))  # Orthanc answers C-FIND only to peers it knows
    pub = save_identity(identities.x25519, cwd.parent / "site", None)[1]
    policy = _policy(cwd.parent, "site", f"p, {ME}, {pacs_studies['ct'].study_uid}, pull, *, *, allow")
    log = cwd.parent / "audit.jsonl"
    env = {**os.environ, "TMPDIR": str(tmp), "MEDSEC_POLICY": str(policy), "MEDSEC_AUDIT_LOG": str(log)}
    r = subprocess.run(
        [sys.executable, "-m", "medsec_nb.cli", "pull", "--dimse", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"]
        + ["--accession", mr.accession, "-o", "mr.msec", "-r", str(pub), "--purpose", "TREAT", "-q"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.startswith(f"medsec: error: denied: no rule allows {ME} to pull {mr.study_uid} for purpose TREAT")
    assert len(r.stderr.strip().splitlines()) == 1 and mr.accession not in r.stderr, r.stderr
    assert _files_under(tmp, cwd) == set()
    assert _denied(log, "pull")["detail"]["protocol"] == "c-get"
    _no_query_values(log, mr)


@pytest.fixture
def encrypted_study(tmp_path, identities):
    """An encrypted 4-slice study of a fake patient (no plaintext file anywhere)."""
    datasets = synthesize_datasets(4, rows=16, columns=16)
    for ds in datasets:
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "Policy^Pat", "MEDSEC-POLICY-3", "ACCPOLICY3"
    path = encrypt_datasets(datasets, tmp_path / "study.msec", [identities.x25519], progress=False)
    return path, str(datasets[0].StudyInstanceUID)


@pytest.mark.slow  # starts its own Orthanc
def test_push_needs_its_own_allow_and_a_denied_push_sends_nothing(make_orthanc, encrypted_study, identities, tmp_path):
    path, uid = encrypted_study
    research = make_orthanc(aet="RESEARCH")
    log = tmp_path / "audit.jsonl"
    read_and_export = (f"p, {ME}, *, decrypt, *, *, allow", f"p, {ME}, *, export, *, *, allow")
    other = "1.2.826.0.1.3680043.8.498.77"
    kw = {"identity": identities.x25519, "secret": SECRET, "progress": False, "audit_log": log, "purpose": "HRESCH"}
    for name, extra in (("export-only", ()), ("another-study", (f"p, {ME}, {other}, push, *, *, allow",))):
        with pytest.raises(PolicyDeniedError, match=rf"^denied: no rule allows {ME} to push \S+ for purpose HRESCH"):
            push(path, research.dicomweb_url, policy=_policy(tmp_path, name, *read_and_export, *extra), **kw)
        assert research.get_json("/instances") == []
    records = list(AuditLog(log).records())
    assert [r["action"] for r in records if r["action"] != "open"] == ["push", "push"]  # no deid-export: not begun
    for rec in records:
        if rec["action"] == "push":
            assert (rec["outcome"], rec["event"], rec["study"]["study_uid"]) == ("denied", "110113", uid)
            assert rec["detail"]["destination"] == research.dicomweb_url

    allowed = _policy(tmp_path, "this-study", *read_and_export, f"p, {ME}, {uid}, push, HRESCH, *, allow")
    report = push(path, research.dicomweb_url, policy=allowed, **kw)
    assert report.instances == 4 and len(research.get_json("/instances")) == 4
    assert [r["outcome"] for r in AuditLog(log).records() if r["action"] == "push"] == ["denied", "denied", "success"]
    text = log.read_text()
    assert "MEDSEC-POLICY-3" not in text and "ACCPOLICY3" not in text


def test_a_receiver_the_policy_forbids_never_listens(tmp_path, identities):
    port = free_port()
    log = tmp_path / "audit.jsonl"
    (tmp_path / "in").mkdir()
    options = {"port": port, "allowed_callers": ["ORTHANC"], "audit_log": log, "purpose": "TREAT"}
    analyst = _policy(tmp_path, "analyst", f"p, {ME}, *, pull, *, *, allow", f"p, {ME}, *, receive, *, *, deny")
    with pytest.raises(PolicyDeniedError, match=rf"^denied: rule 'p, {ME}, \*, receive, \*, \*, deny' forbids"):
        Receiver(tmp_path / "in", [identities.x25519], policy=analyst, **options)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    rec = _denied(log, "receive")
    assert rec["detail"]["ae_title"] == "MEDSEC" and rec["detail"]["rule"][-1] == "deny"

    site = _policy(tmp_path, "site", f"p, {ME}, *, receive, TREAT, *, allow")
    with Receiver(tmp_path / "in", [identities.x25519], policy=site, **options):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert os.listdir(tmp_path / "in") == []


@pytest.mark.slow  # runs the command
def test_cli_receive_denied_is_one_line(tmp_path, identities):
    pub = save_identity(identities.x25519, tmp_path / "site", None)[1]
    policy = _policy(tmp_path, "site", f"p, {ME}, *, pull, *, *, allow")
    (tmp_path / "in").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "medsec_nb.cli", "receive", "-o", str(tmp_path / "in"), "-r", str(pub)]
        + ["--allow-caller", "ORTHANC", "--port", "0", "--purpose", "TREAT"],
        env={**os.environ, "MEDSEC_POLICY": str(policy), "MEDSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"medsec: error: denied: no rule allows {ME} to receive * for purpose TREAT (policy {policy})"
    )
    _denied(tmp_path / "audit.jsonl", "receive")


@pytest.fixture
def keyservice(identities):
    """A real key service (``medsec keyservice`` in a child process) whose policy allows pulling the CT only;
    yields (socket, its log, the policy file)."""
    base = Path(tempfile.mkdtemp(prefix="medsec-policy-ks-", dir="/tmp"))  # a short path for the socket
    site_key = save_identity(identities.p256, base / "site", None)[0]
    sock, log, policy = base / "ks.sock", base / "ks.jsonl", base / "policy.csv"
    argv = ["keyservice", "--socket", str(sock), "-i", str(site_key), "--policy", str(policy), "--log", str(log)]
    proc = multiprocessing.get_context("fork").Process(target=lambda: os._exit(cli_main(argv)))

    def start(*rules: str) -> tuple[Path, Path]:
        policy.write_text("\n".join(rules) + "\n")
        proc.start()
        for _ in range(300):
            if sock.exists():
                break
            time.sleep(0.05)
        return sock, log

    yield start
    if proc.pid is not None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(30)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow  # starts a key service (its shutdown checkpoint takes seconds)
def test_with_a_key_service_the_service_decides_and_records(orthanc, pacs_studies, scratch, identities, keyservice):
    ct, mr = pacs_studies["ct"], pacs_studies["mr"]
    tmp, cwd = scratch
    sock, service_log = keyservice(f"p, {ME}, {ct.study_uid}, pull, TREAT, *, allow")
    local = cwd.parent / "local.jsonl"
    allow_all = _policy(cwd.parent, "everything", f"p, {ME}, *, *, *, *, allow")  # not asked: the service decides
    kw = {"purpose": "TREAT", "log": AuditLog(local), "policy": allow_all, "keyservice": sock, "progress": False}
    with pytest.raises(PolicyDeniedError, match=rf"no rule allows {ME} to pull {mr.study_uid} for purpose TREAT"):
        pull_study(
            DicomWeb(orthanc.dicomweb_url), StudyQuery(study_uid=mr.study_uid), "mr.msec", [identities.x25519], **kw
        )
    pull_study(DicomWeb(orthanc.dicomweb_url), StudyQuery(study_uid=ct.study_uid), "ct.msec", [identities.x25519], **kw)
    with pytest.raises(PolicyDeniedError, match="receive"):
        Receiver(cwd, [identities.x25519], allowed_callers=["ORTHANC"], port=0, purpose="TREAT", keyservice=sock)
    assert not local.exists()
    assert _files_under(tmp, cwd) == {str(cwd / "ct.msec")}
    got = [(r["action"], r["outcome"], (r["study"] or {}).get("study_uid")) for r in AuditLog(service_log).records()]
    assert got == [("pull", "denied", mr.study_uid), ("pull", "success", ct.study_uid), ("receive", "denied", None)]
    assert {r["who"]["os_user"] for r in AuditLog(service_log).records()} == {ME}
