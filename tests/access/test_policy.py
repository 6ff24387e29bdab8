"""The access policy (pycasbin): roles, projects, purposes, expiry, deny rules, the default policy."""

from __future__ import annotations

import os
import pwd
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from medsec_nb.access.policy import (
    DEFAULT_MODEL,
    DEFAULT_POLICY,
    LOCAL_ROLE,
    Policy,
    PolicyDeniedError,
    PolicyError,
    local_user,
)
from medsec_nb.core.errors import MedsecError

STUDY = "1.2.826.0.1.3680043.8.498.4242"
OTHER_STUDY = "1.2.826.0.1.3680043.8.498.9999"
CONTAINER = "cd" * 32
TODAY = datetime.now(timezone.utc).date().isoformat()  # expiry dates are UTC

SITE = f"""\
# site policy used by the tests
p, role:researcher, proj-lung, decrypt, HRESCH|TRAIN, 2099-12-31, allow
p, role:researcher, proj-lung, reveal-tag, HRESCH, *, allow
p, role:student, proj-lung, decrypt, TRAIN, *, allow
p, role:student, *, export, *, *, deny
p, role:steward, *, *, *, *, allow
p, carol, proj-lung, decrypt, HRESCH, 2020-01-01, allow
p, dave, proj-lung, decrypt, HRESCH, {TODAY}, allow
p, erin, {OTHER_STUDY}, decrypt, TREAT, *, allow
g, alice, role:researcher
g, bob, role:student
g, sam, role:steward
g, sam, role:student
g2, {STUDY}, proj-lung
g2, {CONTAINER}, proj-lung
"""


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("MEDSEC_POLICY", raising=False)
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)


@pytest.fixture
def site(tmp_path) -> Policy:
    path = tmp_path / "site.csv"
    path.write_text(SITE)
    return Policy.load(path)


def test_role_on_project_for_purpose_is_allowed_and_names_the_rule(site):
    d = site.check("alice", "decrypt", STUDY, "HRESCH")
    assert d.allowed
    assert d.rule == ["role:researcher", "proj-lung", "decrypt", "HRESCH|TRAIN", "2099-12-31", "allow"]
    assert "p, role:researcher, proj-lung, decrypt, HRESCH|TRAIN, 2099-12-31, allow" in d.reason
    assert site.check("alice", "decrypt", STUDY, "TRAIN").allowed  # second purpose of the rule
    assert site.require("alice", "reveal-tag", STUDY, "HRESCH").allowed


def test_role_without_the_permission_is_denied(site):
    d = site.check("alice", "export", STUDY, "HRESCH")
    assert not d.allowed and d.rule is None and "no rule allows alice to export" in d.reason
    d = site.check("mallory", "decrypt", STUDY, "HRESCH")  # no role at all
    assert not d.allowed and "no rule allows mallory" in d.reason


def test_explicit_deny_rule_wins_and_is_named(site):
    d = site.check("sam", "export", STUDY, "HRESCH")  # steward may do anything, but is also a student
    assert not d.allowed and d.rule == ["role:student", "*", "export", "*", "*", "deny"]
    with pytest.raises(PolicyDeniedError, match=r"rule 'p, role:student, \*, export, \*, \*, deny'") as err:
        site.require("bob", "export", STUDY, "TRAIN")
    assert isinstance(err.value, MedsecError) and err.value.decision.rule[-1] == "deny"


def test_purpose_mismatch_is_denied_with_the_near_miss(site):
    d = site.check("bob", "decrypt", STUDY, "HRESCH")
    assert not d.allowed and d.rule is None
    assert "allows purpose TRAIN, not HRESCH" in d.reason and "p, role:student, proj-lung, decrypt, TRAIN" in d.reason


def test_expiry(site):
    d = site.check("carol", "decrypt", STUDY, "HRESCH")
    assert not d.allowed and "expired (last valid day 2020-01-01)" in d.reason
    assert site.check("dave", "decrypt", STUDY, "HRESCH").allowed  # valid through its last day


def test_project_membership(site):
    assert site.check("alice", "decrypt", CONTAINER, "HRESCH").allowed  # container hash -> project
    assert not site.check("alice", "decrypt", OTHER_STUDY, "HRESCH").allowed
    unknown = "ef" * 32  # not in any project by itself,
    assert site.check("alice", "decrypt", unknown, "HRESCH", projects=[STUDY]).allowed  # but known as STUDY
    assert site.check("erin", "decrypt", OTHER_STUDY, "TREAT").allowed  # a rule on one study
    assert not site.check("erin", "decrypt", STUDY, "TREAT").allowed
    assert not site.check("sam", "export", unknown, "TREAT", projects=[STUDY]).allowed  # deny on any name wins


def test_default_policy_permits_the_local_user_only():
    policy = Policy.load()
    assert policy.path == DEFAULT_POLICY and policy.model_path == DEFAULT_MODEL
    me = local_user()
    assert me == pwd.getpwuid(os.geteuid()).pw_name
    for action in ("decrypt", "reveal-tag", "export", "add-recipient"):
        d = policy.check(me, action, STUDY, "TREAT")
        assert d.allowed and d.rule[0] == LOCAL_ROLE
    assert not policy.check(me + "-other", "decrypt", STUDY, "TREAT").allowed


@pytest.mark.parametrize("var", ["JUPYTERHUB_USER", "LOGNAME", "USER"])
def test_no_environment_variable_changes_the_local_user(monkeypatch, var):
    me = pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setenv(var, "alice@hub")
    assert local_user() == me
    policy = Policy.load()
    assert policy.check(me, "decrypt", STUDY, "HRESCH").allowed
    assert not policy.check("alice@hub", "decrypt", STUDY, "HRESCH").allowed


def test_policy_from_environment_with_model_beside_it(tmp_path, monkeypatch):
    path = tmp_path / "ward.csv"
    path.write_text(SITE)
    monkeypatch.setenv("MEDSEC_POLICY", str(path))
    assert Policy.load().model_path == DEFAULT_MODEL  # no ward.conf: the shipped model
    model = tmp_path / "ward.conf"
    shutil.copyfile(DEFAULT_MODEL, model)
    model.write_text(model.read_text().replace('(p.act == "*" || r.act == p.act)', "r.act == p.act"))
    policy = Policy.load()
    assert policy.path == path and policy.model_path == model
    assert not policy.check("sam", "decrypt", STUDY, "TREAT").allowed  # this model has no action wildcard
    assert policy.check("alice", "decrypt", STUDY, "HRESCH").allowed


@pytest.mark.parametrize(
    "line, match",
    [
        ("p, alice, proj-lung, decypt, HRESCH, *, allow", "unknown action"),
        ("p, alice, proj-lung, decrypt, HRESCH, 31/12/2026, allow", "expiry must be YYYY-MM-DD"),
        ("p, alice, proj-lung, decrypt, HRESCH, *, maybe", "allow or deny"),
    ],
)
def test_malformed_policies_are_refused(tmp_path, line, match):
    path = tmp_path / "bad.csv"
    path.write_text(line + "\n")
    with pytest.raises(PolicyError, match=match):
        Policy.load(path)


def test_missing_or_broken_files_and_bad_requests(tmp_path, site):
    with pytest.raises(PolicyError, match="policy file not found"):
        Policy.load(tmp_path / "nope.csv")
    (tmp_path / "odd.csv").write_text("p, alice, x, decrypt, HRESCH, *, allow\n")
    (tmp_path / "odd.conf").write_text("[request_definition]\nr = sub, obj\n")
    with pytest.raises(PolicyError, match=str(tmp_path / "odd.csv")):
        Policy.load(tmp_path / "odd.csv")
    with pytest.raises(PolicyError, match="unknown action"):
        site.check("alice", "delete", STUDY, "HRESCH")
    with pytest.raises(PolicyError, match="purpose"):
        site.check("alice", "decrypt", STUDY, "")


def test_shipped_files_exist():
    assert Path(DEFAULT_POLICY).is_file() and Path(DEFAULT_MODEL).is_file()
    assert DEFAULT_POLICY.with_suffix(".conf") == DEFAULT_MODEL
