"""The subject of every policy decision and record is the process's effective OS user.

Replays the red-team attack (issue 18, item 1): ``JUPYTERHUB_USER=steward``, ``LOGNAME=steward``
or ``USER=steward`` in front of ``medsec decrypt``, under a site policy that allows only
``steward``, used to export plaintext and record ``os_user: steward``.
"""

from __future__ import annotations

import importlib
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

import medsec_nb
from medsec_nb.audit import AuditLog
from medsec_nb.testdata import synthesize_series

ME = pwd.getpwuid(os.geteuid()).pw_name
SCRIPT = Path(sys.executable).with_name("medsec")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(container, unencrypted key file, a site policy that allows only ``steward``)."""
    d = tmp_path_factory.mktemp("identity")
    synthesize_series(d / "src", n_slices=2, rows=16, columns=16)
    ident = medsec_nb.generate_identity("x25519")
    key, _ = medsec_nb.save_identity(ident, d / "me")
    medsec_nb.encrypt_study(d / "src", d / "s.msec", recipients=[ident.public])
    policy = d / "site.csv"
    policy.write_text("p, steward, *, *, *, *, allow\n")
    return d / "s.msec", key, policy


def _env(tmp_path: Path, policy: Path, **claims: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTERHUB_USER", "LOGNAME", "USER")}
    return {
        **env,
        "MEDSEC_POLICY": str(policy),
        "MEDSEC_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "MEDSEC_PURPOSE": "HRESCH",
        **claims,
    }


@pytest.mark.parametrize(
    "claims",
    [
        {"JUPYTERHUB_USER": "steward"},
        {"LOGNAME": "steward"},
        {"USER": "steward"},
        {"JUPYTERHUB_USER": "steward", "LOGNAME": "steward", "USER": "steward"},
    ],
    ids=["hub", "logname", "user", "all"],
)
def test_environment_cannot_forge_the_subject_of_decrypt(study, tmp_path, claims):
    container, key, policy = study
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "medsec_nb.cli"]
    out = tmp_path / "plain"
    r = subprocess.run(
        cmd + ["decrypt", str(container), "-o", str(out), "-i", str(key), "-q"],
        env=_env(tmp_path, policy, **claims),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "denied" in r.stderr and f"{ME} to export" in r.stderr, r.stderr
    assert not out.exists()
    (rec,) = AuditLog(tmp_path / "audit.jsonl").records()
    assert rec["outcome"] == "denied" and rec["who"]["os_user"] == ME != "steward"
    assert rec["who"]["hub_user"] == claims.get("JUPYTERHUB_USER")  # kept as a claim only


def test_environment_cannot_forge_the_subject_in_python(study, tmp_path, monkeypatch):
    container, key, policy = study
    for var in ("JUPYTERHUB_USER", "LOGNAME", "USER"):
        monkeypatch.setenv(var, "steward")
    with pytest.raises(medsec_nb.PolicyDeniedError, match=f"{ME} to decrypt"):
        medsec_nb.open_study(container, identity=key, purpose="HRESCH", audit_log=tmp_path / "a.jsonl", policy=policy)
    (rec,) = AuditLog(tmp_path / "a.jsonl").records()
    assert rec["who"]["os_user"] == ME and rec["outcome"] == "denied"


def test_the_real_subject_is_allowed_by_its_own_rule(study, tmp_path):
    container, key, _ = study
    policy = tmp_path / "me.csv"
    policy.write_text(f"p, {ME}, *, *, *, *, allow\n")
    with medsec_nb.open_study(
        container, identity=key, purpose="HRESCH", audit_log=tmp_path / "a.jsonl", policy=policy
    ) as st:
        assert st.series[0].volume().shape == (2, 16, 16)


def test_raw_reader_and_exporter_are_not_public():
    """Every public way to decrypt goes through the audited gate: the raw reader and the
    plaintext exporter are private modules, not exported by the package."""
    for name in ("reader", "export"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"medsec_nb.container.{name}")
    public = set(medsec_nb.__all__) | set(dir(importlib.import_module("medsec_nb.container")))
    assert not {"open_container", "export_container", "Container"} & public
