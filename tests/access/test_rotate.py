"""``medsec rotate`` / ``rotate_study``: a fresh study key for exactly the given recipients
(issue 15, "true revocation"), every instance unchanged, audited, atomic."""

from __future__ import annotations

import contextlib
import io
import shutil

import pytest

import medsec_nb
from medsec_nb.access import rotate_study
from medsec_nb.audit import AuditLog
from medsec_nb.cli.main import main
from medsec_nb.container._reader import open_container
from medsec_nb.container.header import read_header


def _files(path, identity) -> list[bytes]:
    with open_container(path, identity) as box:
        return [box.file_bytes(i) for i in range(len(box.entries))]


def test_rotation_revokes_the_old_key_and_keeps_every_instance(signed_container, identities, tmp_path):
    study = tmp_path / "s.msec"
    shutil.copyfile(signed_container, study)
    before = _files(study, identities.x25519)
    released_key = read_header(study)[0].body.commitment
    log = tmp_path / "audit.jsonl"
    out = rotate_study(
        study, [identities.other_x25519.public], identity=identities.x25519, audit_log=log, purpose="HRESCH"
    )
    assert out == study  # replaced in place, atomically
    assert _files(study, identities.other_x25519) == before
    assert read_header(study)[0].body.commitment != released_key and read_header(study)[0].signature is None
    with pytest.raises(medsec_nb.NoMatchingRecipientError):
        open_container(study, identities.x25519)  # the old recipient (and its released key) is out
    recs = [(r["action"], r["outcome"]) for r in AuditLog(log).records()]
    assert recs == [("rotate-open", "success"), ("rotate", "success")]


def test_rotation_needs_a_recipient_and_a_failure_leaves_the_study(signed_container, identities, tmp_path):
    study = tmp_path / "s.msec"
    shutil.copyfile(signed_container, study)
    data = study.read_bytes()
    with pytest.raises(medsec_nb.MedsecError, match="at least one recipient"):
        rotate_study(study, [], identity=identities.x25519, audit_log=tmp_path / "a.jsonl", purpose="HRESCH")
    with pytest.raises(medsec_nb.NoMatchingRecipientError):  # an ed25519 key cannot receive
        rotate_study(
            study,
            [identities.signer.public],
            identity=identities.x25519,
            audit_log=tmp_path / "a.jsonl",
            purpose="HRESCH",
        )
    assert study.read_bytes() == data
    assert [r["outcome"] for r in AuditLog(tmp_path / "a.jsonl").records()][-1] == "failure"


def test_cli_rotate_to_a_new_file(signed_container, identities, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    key, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "k")
    _, pub = medsec_nb.save_identity(identities.other_p256, tmp_path / "new")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "rotate",
                str(signed_container),
                "-o",
                str(tmp_path / "r.msec"),
                "-i",
                str(key),
                "-r",
                str(pub),
                "--purpose",
                "HRESCH",
                "-q",
            ]
        )
    assert code == 0 and "1 recipient(s)" in out.getvalue()
    assert _files(tmp_path / "r.msec", identities.other_p256) == _files(signed_container, identities.x25519)
