"""The study layer knows nothing of Jupyter: faces follow studies through events and provide the
widgets ``Series.view()`` and ``Series.redactor()`` return (issue 14, item 2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import medsec_nb
from medsec_nb.study import events

FACES = ("medsec_nb.notebook", "medsec_nb.saveguard", "medsec_nb.server", "medsec_nb.cli", "medsec_nb.cohort")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_opening_a_study_in_plain_python_loads_no_face(signed_container, identities, tmp_path):
    """In a script (no IPython), a study opens, reads and closes with no notebook, save guard,
    server, IPython or widget module loaded, and a viewer is a clear one-line error."""
    key, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "k")
    r = _run(f"""
        import sys
        import medsec_nb
        with medsec_nb.open_study({str(signed_container)!r}, identity={str(key)!r}, purpose="HRESCH",
                                  audit_log={str(tmp_path / "a.jsonl")!r}) as st:
            st.series[0].volume()
            try:
                st.series[0].view()
            except medsec_nb.MedsecError as exc:
                print("VIEW:", exc)
        loaded = sorted(m for m in sys.modules if m.startswith({FACES!r}) or m.split(".")[0] in
                        ("IPython", "ipywidgets", "ipykernel", "matplotlib", "jupyter_server"))
        print("LOADED:", loaded)
    """)
    assert r.returncode == 0, r.stderr
    assert "LOADED: []" in r.stdout, r.stdout
    assert "VIEW: series.view() is a Jupyter widget" in r.stdout


def test_listeners_follow_open_and_close_and_a_failing_one_only_warns(signed_container, identities, tmp_path):
    seen: list[tuple[str, object]] = []

    def opened(study):
        seen.append(("opened", study))

    def broken(study):
        raise RuntimeError("listener bug")

    def closed(study):
        seen.append(("closed", study))

    events.subscribe(opened=opened, closed=closed)
    events.subscribe(opened=opened)  # once per function, however often subscribed
    events.subscribe(opened=broken)
    try:
        with pytest.warns(RuntimeWarning, match="listener for studies being opened failed"):
            st = medsec_nb.open_study(signed_container, identity=identities.x25519, audit_log=tmp_path / "a.jsonl")
        assert not st.closed and st.series[0].volume().shape[0] == len(st.series[0])  # the open stands
        st.close()
    finally:
        events.unsubscribe(opened=opened, closed=closed)
        events.unsubscribe(opened=broken)
    assert seen == [("opened", st), ("closed", st)]


def test_series_public_api_for_faces(signed_container, identities, tmp_path):
    with medsec_nb.open_study(signed_container, identity=identities.x25519, audit_log=tmp_path / "a.jsonl") as st:
        s = st.series[0]
        assert s.study is st and len(s.entries) == len(s)
        assert [e["sop"] for e in s.entries] == [s.header(i).SOPInstanceUID for i in range(len(s))]
        assert s.pixels(0).shape == (1, *s.volume()[0].shape)
        assert st.audit_log.path == (tmp_path / "a.jsonl") and st.access.purpose == st.purpose
    with pytest.raises(medsec_nb.StudyClosedError):
        s.entries
    with pytest.raises(medsec_nb.StudyClosedError):
        st.require_open()
