"""The notebook save guard: keyed fingerprints published by the process that opens a study, and the
server's pre-save hook (a real Jupyter server; the study is opened in another process)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pydicom
import pytest
from nbclient import NotebookClient
from pydicom.dataset import Dataset
from tornado.httpclient import HTTPClientError

import medsec_nb
from medsec_nb.audit import AuditLog
from medsec_nb.saveguard import fingerprints as guard
from medsec_nb.saveguard.hook import MARKER, guard_notebook, redact_text, redact_uids
from medsec_nb.testdata import synthesize_series

pytest_plugins = ["pytest_jupyter.jupyter_server"]


def _ds() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^John^Quincy"
    ds.PatientID = "MRN-004711"
    ds.PatientBirthDate = "19700203"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1234567"
    ds.Modality = "CT"
    item = Dataset()
    item.PatientID = "OTHER-99887"
    ds.OtherPatientIDsSequence = [item]
    return ds


@pytest.fixture
def fps():
    key = guard.guard_key()
    return guard.Fingerprints.of(key, guard.identifying_variants(_ds())), key


@pytest.mark.parametrize(
    "text",
    [
        "Doe^John^Quincy",
        "John Doe",
        "DOE, JOHN",
        "john quincy doe",
        "patient: Doe",
        "MRN-004711",
        "mrn 004711",
        "1970-02-03",
        "03/02/1970",
        "2/3/1970",
        "3 Feb 1970",
        "February 3, 1970",
        "19700203",
        "1.2.826.0.1.3680043.8.498.1234567",
        "OTHER-99887",
    ],
)
def test_every_form_of_a_value_is_redacted(fps, text):
    out, n = redact_text(f"value <b>{text}</b> here", *fps)
    assert n >= 1 and out.startswith("value <b>") and out.endswith("</b> here") and MARKER in out
    for tok in ("doe", "john", "004711", "1970", "1234567", "99887"):
        assert tok not in out.casefold()


def test_unrelated_text_is_left_alone(fps):
    text = "CT 512 x 512, 1970 slices, Johnson Doeville, 2026-02-03, id 4711, uid 1.2.826.0.1"
    assert redact_text(text, *fps) == (text, 0)


def test_notebook_outputs_and_widget_state_are_redacted_not_sources_or_images(fps):
    png = "iVBORw0KGgoDoeJohn"
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "source": "ds.PatientName",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["name Doe^John^Quincy\n", "id MRN-004711\n"]},
                    {
                        "output_type": "execute_result",
                        "data": {
                            "text/plain": "'John Doe'",
                            "text/html": "<td>DOE, JOHN</td>",
                            "image/png": png,
                            "application/json": {"who": ["Doe John"]},
                        },
                    },
                    {
                        "output_type": "error",
                        "ename": "KeyError",
                        "evalue": "MRN-004711",
                        "traceback": ["... 1970-02-03"],
                    },
                ],
            }
        ],
        "metadata": {
            "widgets": {
                "application/vnd.jupyter.widget-state+json": {
                    "state": {"m": {"state": {"value": "<b>PatientName</b>: <code>Doe^John^Quincy</code>"}}}
                }
            }
        },
    }
    assert guard_notebook(nb, *fps) == 8
    saved = json.dumps(nb)
    for value in ("Quincy", "MRN-004711", "John Doe", "DOE, JOHN", "1970-02-03"):
        assert value not in saved
    assert nb["cells"][0]["source"] == "ds.PatientName" and png in saved


def test_only_kernels_publish_unless_switched(signed_container, identities, monkeypatch):
    """A script's or the CLI's values cannot reach a saved notebook: outside a kernel nothing is published."""
    monkeypatch.delenv("MEDSEC_SAVE_GUARD_PUBLISH", raising=False)
    with medsec_nb.open_study(signed_container, identity=identities.x25519) as st:
        assert not guard.publishing() and not guard.wait(st) and not guard.runtime_file().exists()
    monkeypatch.setenv("MEDSEC_SAVE_GUARD_PUBLISH", "1")
    with medsec_nb.open_study(signed_container, identity=identities.x25519) as st:
        assert guard.publishing() and guard.wait(st) and guard.runtime_file().exists()


def test_publication_holds_no_value_and_is_withdrawn_on_close(signed_container, identities, series_source, monkeypatch):
    monkeypatch.setenv("MEDSEC_SAVE_GUARD_PUBLISH", "1")  # as a kernel does
    src = pydicom.dcmread(series_source.files[0])
    st = medsec_nb.open_study(signed_container, identity=identities.x25519)
    assert guard.wait(st)
    path = guard.runtime_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(guard.key_path().stat().st_mode) == 0o600
    text = path.read_text()
    for value in (
        str(src.PatientName),
        src.PatientID,
        src.StudyDate,
        src.StudyInstanceUID,
        src.PatientName.family_name,
        src.PatientName.family_name.lower(),
    ):
        assert value not in text
    fps = guard.load_published()
    assert redact_text(f"{src.PatientName.family_name} {src.PatientID}", fps, guard.guard_key())[1] == 2
    studies = len(json.loads(text)["studies"])
    st.close()
    assert (len(json.loads(path.read_text())["studies"]) if path.exists() else 0) == studies - 1


def test_a_malformed_fingerprint_file_is_an_error_naming_it():
    bad = guard.runtime_file(os.getppid())  # a live process: its file is read, not dropped
    try:
        bad.write_text("{not json")
        with pytest.raises(medsec_nb.MedsecError, match=f"{os.getppid()}.json: unreadable runtime file"):
            guard.load_published()
        bad.write_text('{"v": 1, "studies": {"x": {"full": 7}}}')
        with pytest.raises(medsec_nb.MedsecError, match=f"{os.getppid()}.json: not a save guard fingerprint file"):
            guard.load_published()
    finally:
        bad.unlink(missing_ok=True)


def test_a_dead_process_s_fingerprints_are_dropped():
    """One rule for every runtime file: a process that no longer exists publishes nothing."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = guard.runtime_file(int(dead.stdout))
    path.write_text('{"v": 1, "studies": {"x": {"full": ["00"], "first": ["00"], "lengths": [1]}}}')
    assert guard.load_published().full == set() and not path.exists()


# -- a real server; the study is opened by another process ------------------------------------

KERNEL = textwrap.dedent("""
    import sys, medsec_nb
    from medsec_nb.saveguard import fingerprints as guard
    st = medsec_nb.open_study(sys.argv[1], identity=sys.argv[2], purpose="HRESCH")
    assert guard.wait(st)
    print("ready", flush=True)
    sys.stdin.readline()
    st.close()
""")


@pytest.fixture(scope="module")
def patient(tmp_path_factory, identities) -> tuple[Path, Dataset]:
    """A two-slice study of a patient no other test uses, encrypted to the x25519 identity."""
    base = tmp_path_factory.mktemp("guard")
    files = synthesize_series(base / "src", n_slices=2, rows=16, columns=16)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = "Quartermaine^Ophelia", "QX-771903"
        ds.save_as(f)
    medsec_nb.encrypt_study(base / "src", base / "guard.msec", recipients=[identities.x25519], progress=False)
    return base / "guard.msec", pydicom.dcmread(files[0])


@pytest.fixture
def kernel(patient, identities, tmp_path):
    """Another process with the study open (as a kernel would have), until the test ends."""
    key = tmp_path / "me"
    medsec_nb.save_identity(identities.x25519, key)
    assert redact_text("Ophelia Quartermaine", guard.load_published(), guard.guard_key())[1] == 0
    proc = subprocess.Popen(
        [sys.executable, "-c", KERNEL, str(patient[0]), f"{key}.key"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MEDSEC_SAVE_GUARD_PUBLISH="1"),
    )  # a kernel stand-in
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.communicate("close\n", timeout=60)
    assert not guard.runtime_file(proc.pid).exists()
    assert redact_text("Ophelia Quartermaine", guard.load_published(), guard.guard_key())[1] == 0


def _notebook(text: str) -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "c1",
                "execution_count": 1,
                "metadata": {},
                "source": "ct.series[0].header(0)",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": text}],
            }
        ],
    }


async def _save(jp_fetch, name: str, text: str):
    return await jp_fetch(
        "api",
        "contents",
        name,
        method="PUT",
        body=json.dumps({"type": "notebook", "format": "json", "content": _notebook(text)}),
    )


SERVER = {"ServerApp": {"jpserver_extensions": {"medsec_nb.server": True, "medsec_nb.saveguard": True}}}


@pytest.fixture(autouse=True)
def audit_log_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))


@pytest.fixture
def jp_server_config():
    return SERVER


async def test_saved_outputs_lose_the_values_of_a_study_open_in_a_kernel(
    jp_fetch, jp_root_dir, kernel, patient, tmp_path
):
    src = patient[1]
    await _save(jp_fetch, "a.ipynb", f"patient {src.PatientName} id {src.PatientID}\n")
    saved = (jp_root_dir / "a.ipynb").read_text()
    assert str(src.PatientName) not in saved and src.PatientID not in saved and saved.count(MARKER) == 2
    rec = list(AuditLog(tmp_path / "audit.jsonl").records())[-1]
    assert (rec["action"], rec["outcome"], rec["detail"]) == (
        "save-guard",
        "success",
        {"notebook": "a.ipynb", "values": 2, "mode": "redact"},
    )
    assert src.PatientID not in (tmp_path / "audit.jsonl").read_text()
    await _save(jp_fetch, "b.ipynb", "nothing to see\n")
    assert "nothing to see" in (jp_root_dir / "b.ipynb").read_text()
    other = "1.2.826.0.1.3680043.8.498.99887766554433221100"  # a UID of a study not open
    await _save(jp_fetch, "u.ipynb", f"SOP {other}; transfer syntax 1.2.840.10008.1.2.1\n")
    saved = (jp_root_dir / "u.ipynb").read_text()
    assert other not in saved and "1.2.840.10008.1.2.1" in saved and saved.count(MARKER) == 1


@pytest.mark.parametrize(
    "text, found",
    [
        ("study 1.2.826.0.1.3680043.8.498.12345678901 done.", 1),
        ("uid 2.25.123456789012345678901234567890.", 1),
        ("1.2.3.4.5.6.7.8.9.10.11.12.13 and 2.16.840.1.113669.632.20.1.1", 2),
        ("transfer syntax 1.2.840.10008.1.2.1, python 3.11.7, 10.0.0.1, 1.2.3", 0),
        ("x = 1.2345678901234567890123; id a1.2.826.0.1.3680043.8.498.1", 0),
    ],
)
def test_dicom_looking_uids_are_redacted(text, found):
    out, n = redact_uids(text)
    assert n == found and out.count(MARKER) == found


@pytest.mark.parametrize("jp_server_config", [{**SERVER, "SaveGuard": {"mode": "block"}}])
async def test_block_mode_refuses_the_save_and_keeps_the_file(
    jp_fetch, jp_root_dir, jp_serverapp, kernel, patient, tmp_path
):
    assert jp_serverapp.web_app.settings["medsec_save_guard"].mode == "block"
    src = patient[1]
    await _save(jp_fetch, "c.ipynb", "first version\n")
    before = (jp_root_dir / "c.ipynb").read_text()
    with pytest.raises(HTTPClientError) as err:
        await _save(jp_fetch, "c.ipynb", f"patient {src.PatientName}\n")
    assert err.value.code == 409 and "identifying value" in err.value.response.body.decode()
    assert (jp_root_dir / "c.ipynb").read_text() == before
    rec = list(AuditLog(tmp_path / "audit.jsonl").records())[-1]
    assert (rec["action"], rec["outcome"], rec["detail"]["mode"]) == ("save-guard", "denied", "block")


@pytest.mark.slow
async def test_a_real_kernel_publishes_on_load_and_withdraws_on_unload(
    jp_fetch, jp_root_dir, patient, identities, tmp_path
):
    key, _ = medsec_nb.save_identity(identities.x25519, tmp_path / "analyst")
    cells = [
        f"%load_ext medsec_nb.notebook.magics\n%config MedsecMagics.harden = False\n"
        f"%load_secure_study {patient[0]} -i {key} -p HRESCH --as ct",
        "from medsec_nb.saveguard import fingerprints as guard\nassert guard.wait(ct)\nds = ct.series[0].header(0)\n"
        "print(ds.PatientName, ds.PatientID)",
        "%unload_secure_study ct",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=60, kernel_name="python3")
    async with client.async_setup_kernel(env=dict(os.environ)):
        for index in (0, 1):
            await client.async_execute_cell(nb.cells[index], index)
        shown = "".join(o.get("text", "") for o in nb.cells[1].outputs)
        assert "Quartermaine^Ophelia QX-771903" in shown  # the analyst saw it
        await jp_fetch(
            "api",
            "contents",
            "k.ipynb",
            method="PUT",
            body=json.dumps({"type": "notebook", "format": "json", "content": nb}),
        )
        saved = (jp_root_dir / "k.ipynb").read_text()
        assert "Quartermaine" not in saved and "771903" not in saved and saved.count(MARKER) == 2
        await client.async_execute_cell(nb.cells[2], 2)  # closed: its values are withdrawn
        await _save(jp_fetch, "after.ipynb", "Quartermaine\n")
        assert "Quartermaine" in (jp_root_dir / "after.ipynb").read_text()
