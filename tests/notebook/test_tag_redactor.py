"""``TagRedactor``: tag rows under a profile, overrides, and the justified, audited, transient reveal
(real encrypted study, ipywidgets' test comm)."""

from __future__ import annotations

import json

import ipywidgets as w
import pydicom
import pytest

import medsec_nb
from medsec_nb.access.reveal import MIN_JUSTIFICATION, element_at
from medsec_nb.audit import AuditLog
from medsec_nb.core.errors import JustificationError
from medsec_nb.deid import Profile
from medsec_nb.deid.redaction import REDACTED
from medsec_nb.notebook.tag_redactor import TagRedactor, check_override, tag_rows

REASON = "checking the referral against the clinical record"


pytestmark = pytest.mark.usefixtures("widget_comm")


@pytest.fixture
def log(tmp_path) -> AuditLog:
    return AuditLog(tmp_path / "audit.jsonl")


@pytest.fixture
def study(signed_container, identities, log):
    with medsec_nb.open_study(signed_container, identity=identities.x25519, audit_log=log) as st:
        yield st


@pytest.fixture
def source(series_source) -> pydicom.Dataset:
    return pydicom.dcmread(series_source.files[0])


def _state(widget: w.Widget) -> str:
    """The state of ``widget`` and every widget inside it, as a notebook saved with widget state holds it
    (the test comm gives every widget the same id, so the manager state cannot be used here)."""
    states, todo = [], [widget]
    while todo:
        one = todo.pop()
        states.append(one.get_state())
        todo.extend(getattr(one, "children", ()))
    return json.dumps(states, default=str)


def _row(rows, path):
    return next(r for r in rows if r.path == path)


def test_rows_cover_nested_elements_with_the_profile_action(source):
    rows = tag_rows(source, Profile())
    assert _row(rows, "Modality").shown == "CT" and _row(rows, "Modality").action == "keep"
    assert _row(rows, "PatientName").shown == REDACTED and _row(rows, "PatientName").action == "replace"
    nested = _row(rows, "OtherPatientIDsSequence[0].PatientID")
    assert nested.depth == 1 and nested.action == "remove" and nested.shown == REDACTED  # inside a removed sequence
    assert "(7FE0,0010)" not in {r.tag for r in rows}
    dates = tag_rows(source, Profile({"retain-long-full-dates"}))
    assert _row(dates, "StudyDate").shown == source.StudyDate and _row(rows, "StudyDate").shown == REDACTED
    assert (
        element_at(source, "OtherPatientIDsSequence[1].PatientID").value == source.OtherPatientIDsSequence[1].PatientID
    )
    assert element_at(source, "OtherPatientIDsSequence[9].PatientID") is None and element_at(source, "Nope") is None


def test_overrides_hide_anything_but_show_no_identity(source):
    check_override(source["StudyDate"], "keep")
    for kw in ("PatientName", "PatientID", "InstitutionName", "ReferringPhysicianName"):
        with pytest.raises(ValueError, match="reveal it with a justification"):
            check_override(source[kw], "keep")
    rows = tag_rows(source, Profile(), {"StudyDate": "keep", "Modality": "redact"})
    assert _row(rows, "StudyDate").shown == source.StudyDate and _row(rows, "StudyDate").override == "keep"
    assert _row(rows, "Modality").shown == REDACTED


def test_widget_toggles_options_and_overrides(study, source):
    red = study.series[0].redactor(0)
    assert str(source.StudyDate) not in red.table.value and "PatientName" in red.table.value
    red.option_boxes["retain-long-full-dates"].value = True
    assert source.StudyDate in red.table.value
    red.option_boxes["retain-long-modified-dates"].value = True  # excludes full dates: that one goes
    assert (
        red.profile.options == {"retain-long-modified-dates"} and not red.option_boxes["retain-long-full-dates"].value
    )
    red.tag.value = "PatientName"
    red.override.value = "keep"  # refused: identity needs a reveal
    assert red.override.value == "profile" and "reveal it with a justification" in red.status.value
    red.tag.value = "Modality"
    red.override.value = "redact"
    assert red.overrides == {"Modality": "redact"} and ">CT<" not in red.table.value
    for r in tag_rows(red._header, red.profile, red.overrides):
        assert str(source.PatientName) not in r.shown
    assert str(source.PatientName) not in _state(red) and source.PatientID not in _state(red)
    red.close()
    assert red.closed


class Clock:
    """An injected scheduler: what the redactor asked to run later, run when the test says."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object]] = []

    def __call__(self, seconds, fn):
        entry = [seconds, fn]
        self.pending.append(entry)
        return type("Handle", (), {"cancel": lambda _self: entry.__setitem__(1, None)})()

    def advance(self) -> list[float]:
        due, self.pending = [(s, fn) for s, fn in self.pending if fn is not None], []
        for _, fn in due:
            fn()
        return [s for s, _ in due]


def test_reveal_needs_a_justification_is_audited_and_transient(study, source, log):
    clock = Clock()
    red = TagRedactor(study.series[0], 0, reveal_seconds=0.3, schedule=clock)
    before = len(list(log.records()))
    red.justification.value = "because"
    assert red.reveal("PatientName") is None and "JustificationError" in red.status.value
    assert red.revealed.value == "" and len(list(log.records())) == before
    with pytest.raises(JustificationError):
        study.series[0].reveal(0, "PatientName", justification=" " * 40)
    red.justification.value = REASON
    name = red.reveal("OtherPatientIDsSequence[0].PatientID")
    assert name == source.OtherPatientIDsSequence[0].PatientID and name in red.revealed.value
    rec = list(log.records())[-1]
    assert (rec["action"], rec["detail"]["tag"], rec["detail"]["justification"]) == (
        "reveal-tag",
        "OtherPatientIDsSequence[0].PatientID",
        REASON,
    )
    assert name not in log.path.read_text() and red.justification.value == ""
    assert name in red.revealed.value  # still shown until reveal_seconds have passed
    assert clock.advance() == [0.3]  # hidden after reveal_seconds
    assert red.revealed.value == "" and name not in _state(red)
    value = red.reveal("PatientName", justification=REASON)
    assert value == str(source.PatientName) and value in _state(red)
    red.tag.value = "Modality"  # the next action hides it
    assert red.revealed.value == "" and value not in _state(red)
    assert len(REASON) >= MIN_JUSTIFICATION
    red.close()


def test_denied_reveal_shows_why_and_reveals_nothing(signed_container, identities, tmp_path):
    policy = tmp_path / "no-reveal.csv"
    policy.write_text("p, @local, *, decrypt, *, *, allow\n")
    with medsec_nb.open_study(signed_container, identities.x25519, audit_log=tmp_path / "a.jsonl", policy=policy) as st:
        red = st.series[0].redactor()
        assert red.reveal("PatientName", justification=REASON) is None
        assert "PolicyDeniedError" in red.status.value and red.revealed.value == ""
        red.close()


def test_unloading_the_study_closes_its_redactors(study, source):
    from medsec_nb.notebook.magics import unload
    from medsec_nb.notebook.tag_redactor import close_redactors

    red = study.series[0].redactor()
    red.reveal("PatientName", justification=REASON)
    unload(study)
    assert red.closed and red.revealed.value == "" and red._header is None and study.closed
    assert close_redactors(study) == 0
