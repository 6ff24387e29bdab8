"""End to end in a real kernel (nbclient): a notebook built here loads an encrypted CT series.

The key file's passphrase is typed through Jupyter's stdin channel, as JupyterLab's password
field does. Checks: the volume equals a plain pydicom read bit for bit; displays and the whole
saved notebook (outputs and widget state) hold none of the patient's name, ID or birth date;
neither the notebook, ``_ih`` nor the history database hold the passphrase; the kernel is
hardened; a wrong passphrase is one error line; and no file appears in the kernel's temp dir,
its working dir or HOME (the kernel's own files and the audit log are pointed at an "expected"
folder), and the audit log records each access with the kernel id and cell number.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path

import nbformat
import pydicom
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

import medsec_nb
from medsec_nb.testdata import synthesize_series

pytestmark = pytest.mark.slow

KEY_PASSPHRASE = "kernel-test key passphrase 4v#Qm"
PATIENT = {"PatientName": "Estragon^Vladimir^G", "PatientID": "PID-77213-KX", "PatientBirthDate": "19530105"}


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (0, 0)
    return out


def _cells(src: Path) -> list[tuple[str, list[str]]]:
    """(source, tags) of the notebook; cell 0 and the wrong-passphrase cell read stdin."""
    check = f"""\
import glob, numpy as np, pydicom
from pydicom.pixels import apply_modality_lut
vol = ct.series[0].volume()
plain = sorted((pydicom.dcmread(f) for f in glob.glob({str(src)!r} + "/*.dcm")),
               key=lambda d: float(d.ImagePositionPatient[2]))
ref = np.stack([apply_modality_lut(d.pixel_array, d) for d in plain])
raw = np.stack([d.pixel_array for d in plain])
stored = (vol - int(plain[0].RescaleIntercept)).astype(raw.dtype)
assert vol.shape == ref.shape and vol.dtype.kind == "i" and np.array_equal(vol, ref)
assert stored.tobytes() == raw.tobytes()
print("volume identical", vol.shape)"""
    return [
        (
            "%load_ext medsec_nb.notebook.magics\n"
            "%load_secure_study study.msec --identity analyst.key --purpose HRESCH --as ct",
            [],
        ),
        ("ct", []),
        ("ct.series[0]", []),
        ("ct.series[0][2]", []),
        ("ct.series[0].header(1)", []),
        (check, []),
        ("ct.series[0].geometry", []),
        ("v = ct.series[0].view(preset='lung')\nv", []),
        ("v.slider.value = 1\nprint(v.status.value)\nv.close()\nprint(repr(v))", []),
        (
            "import ctypes, resource\nprint(resource.getrlimit(resource.RLIMIT_CORE), "
            "ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))",
            [],
        ),
        ("%load_secure_study study.msec --identity analyst.key --purpose HRESCH --as other", ["raises-exception"]),
        ("%unload_secure_study ct\nprint('ct' in dir())", []),
        ("print(repr(_ih))\nprint(repr(get_ipython().history_manager.input_hist_raw))", []),
    ]


STDIN_CELLS = {0: KEY_PASSPHRASE, 10: "not the passphrase"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, identities):
    """Build the study, run the notebook in a fresh kernel; return what the checks need."""
    base = tmp_path_factory.mktemp("kernel")
    src, work, home, ktmp, expected = (base / n for n in ("src", "work", "home", "tmp", "expected"))
    for d in (work, home, ktmp, expected):
        d.mkdir()
    files = synthesize_series(src, n_slices=8, rows=64, columns=64)
    for f in files:
        ds = pydicom.dcmread(f)
        for kw, value in PATIENT.items():
            setattr(ds, kw, value)
        ds.save_as(f, enforce_file_format=True)
    medsec_nb.save_identity(identities.x25519, work / "analyst", passphrase=KEY_PASSPHRASE)
    medsec_nb.encrypt_study(src, work / "study.msec", recipients=[identities.x25519.public], progress=False)

    nb = new_notebook(cells=[new_code_cell(s, metadata={"tags": t}) for s, t in _cells(src)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    hist = expected / "history.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEC_")}
    env.update(
        HOME=str(home),
        TMPDIR=str(ktmp),
        IPYTHONDIR=str(expected / "ipython"),
        MPLCONFIGDIR=str(expected / "mpl"),
        JUPYTER_RUNTIME_DIR=str(expected / "runtime"),
        JUPYTER_CONFIG_DIR=str(expected / "jconfig"),
        JUPYTER_DATA_DIR=str(expected / "jdata"),
        MEDSEC_DATA_DIR=str(expected / "medsec"),  # the audit log and its companions
        JPY_SESSION_NAME=str(expected / "run.ipynb"),
    )  # as a Jupyter server sets it
    prompts: list[dict] = []
    kernel_id = str(uuid.uuid4())  # a Jupyter server names connection files kernel-<id>.json
    (expected / "runtime").mkdir()
    km = AsyncKernelManager(
        kernel_name="python3", connection_file=str(expected / "runtime" / f"kernel-{kernel_id}.json")
    )
    client = NotebookClient(
        nb,
        km=km,
        timeout=60,
        resources={"metadata": {"path": str(work)}},
        extra_arguments=[f"--HistoryManager.hist_file={hist}"],
    )

    async def answer_stdin(cell, cell_index):
        if cell_index in STDIN_CELLS:
            msg = await client.kc.get_stdin_msg(timeout=30)
            prompts.append(msg["content"])
            client.kc.input(STDIN_CELLS[cell_index])

    client.on_cell_complete = answer_stdin
    before = _snapshot(work, home, ktmp)
    with client.setup_kernel(env=env, cleanup_kc=True):  # shut the kernel down at the end
        client.kc.allow_stdin = True
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        client.set_widgets_metadata()
    saved = expected / "run.ipynb"
    nbformat.write(nb, saved)
    return {
        "nb": nb,
        "saved": saved,
        "files": files,
        "prompts": prompts,
        "hist": hist,
        "kernel_id": kernel_id,
        "audit": expected / "medsec" / "audit.jsonl",
        "before": before,
        "after": _snapshot(work, home, ktmp),
    }


def _identifiers(files: list[Path]) -> list[str]:
    out = set()
    for f in files:
        ds = pydicom.dcmread(f)
        out |= {
            str(ds.PatientName),
            ds.PatientName.family_name,
            ds.PatientName.given_name,
            str(ds.PatientID),
            str(ds.PatientBirthDate),
        }
    return sorted(out)


def _text(cell) -> str:
    parts = []
    for o in cell.outputs:
        parts.append(o.get("text", ""))
        parts += [str(v) for v in o.get("data", {}).values()]
        parts += o.get("traceback", [])
    return "\n".join(parts)


def test_passphrase_was_asked_in_a_password_field(run):
    assert [(p["password"], p["prompt"].startswith("Passphrase for key ")) for p in run["prompts"]] == [
        (True, True),
        (True, True),
    ]


def test_displays_are_redacted_and_informative(run):
    cells = run["nb"].cells
    study = _text(cells[1])
    assert "Study study.msec: 1 series, 8 instances" in study and "HRESCH" in study and "64 x 64" in study
    assert "text/html" in cells[1].outputs[0]["data"]
    for k in (2, 3, 4):
        assert "PatientName" in _text(cells[k]) and "redacted" in _text(cells[k])
    for cell in cells:
        for value in _identifiers(run["files"]):
            assert value not in _text(cell), f"{value!r} shown by cell {cell.source!r}"


def test_volume_is_bit_for_bit_the_plain_read(run):
    assert "volume identical (8, 64, 64)" in _text(run["nb"].cells[5])
    assert "spacing=(1.25" in _text(run["nb"].cells[6])


def test_viewer_steps_and_closes(run):
    out = _text(run["nb"].cells[8]).splitlines()
    assert out == ["slice 2/8 \u00b7 W 1500 L -600", "SliceViewer(CT #1, closed)"]
    state = run["nb"].metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    assert images and all(not b["data"] for m in images for b in m.get("buffers", []))  # closed: blanked
    assert "iVBORw0KGgo" not in run["saved"].read_text(encoding="utf-8")  # no PNG saved


def test_kernel_is_hardened(run):
    assert _text(run["nb"].cells[9]).strip() == "(0, 0) 0"


def test_wrong_passphrase_is_one_error_line(run):
    [err] = [o for o in run["nb"].cells[10].outputs if o["output_type"] == "error"]
    assert err["ename"] == "MagicError"
    assert len(err["traceback"]) == 1 and err["traceback"][0].startswith("WrongPassphraseError: ")
    assert "analyst.key: incorrect key passphrase" in err["traceback"][0]


def test_unload_removes_the_study(run):
    assert _text(run["nb"].cells[11]).strip() == "False"


def test_saved_notebook_holds_no_identifier_and_no_passphrase(run):
    text = run["saved"].read_text(encoding="utf-8")
    json.loads(text)
    for value in _identifiers(run["files"]) + [KEY_PASSPHRASE]:
        assert value not in text
    inputs = _text(run["nb"].cells[12])  # _ih and the raw input history, printed in full
    assert "run_line_magic('load_secure_study', 'study.msec" in inputs and "%load_secure_study study.msec" in inputs


def test_history_database_holds_no_passphrase(run):
    with sqlite3.connect(run["hist"]) as db:
        rows = db.execute("SELECT source, source_raw FROM history").fetchall()
    assert any("%load_secure_study" in raw for _, raw in rows)
    assert not any(KEY_PASSPHRASE in s or KEY_PASSPHRASE in raw for s, raw in rows)


def test_accesses_are_in_the_audit_log_with_kernel_and_cell(run):
    records = [json.loads(line) for line in run["audit"].read_text(encoding="utf-8").splitlines()]
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("open", "success"),
        ("decrypt-series", "success"),
        ("open", "failure"),
    ]
    assert all(
        r["why"]["purpose"] == "HRESCH"
        and r["where"]["kernel_id"] == run["kernel_id"]
        and r["where"]["notebook"] == str(run["saved"])
        for r in records
    )
    assert [r["where"]["cell"] for r in records] == [1, 6, 11]
    assert records[2]["detail"]["error"] == "WrongPassphraseError"
    text = run["audit"].read_text(encoding="utf-8")
    for value in _identifiers(run["files"]) + [KEY_PASSPHRASE]:
        assert value not in text


def test_no_file_was_created_outside_the_expected_places(run):
    assert run["after"] == run["before"]
