"""Issue 18 item 2: no identifying value reaches a saved notebook, in any form an output shows it.

A study of a patient named ``O'Brien^Mary-Kate`` (ID ``MRN4471923``, born 1963-08-27) is open in
another process that published its fingerprints; notebooks are saved through a real Jupyter
server (``PUT /api/contents``). Each form is tried as is, in lower and in upper case.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import nbformat
import pydicom
import pytest
from nbclient import NotebookClient
from test_save_guard import KERNEL, SERVER

import medsec_nb
from medsec_nb.saveguard import fingerprints as guard
from medsec_nb.saveguard.hook import MARKER, redact_text
from medsec_nb.testdata import synthesize_series

matplotlib.use("agg")
import matplotlib.pyplot as plt  # after the backend is chosen

pytest_plugins = ["pytest_jupyter.jupyter_server"]

NAME, PID, BIRTH = "O'Brien^Mary-Kate", "MRN4471923", "19630827"
#: What must not be in a saved notebook, case-insensitively (with the form's escapes undone).
LEAKS = ("brien", "mary", "kate", "4471923", "1963")
CASES = {"as-is": str, "lower": str.lower, "upper": str.upper}


def _study(base: Path, identities, name: str, pid: str, birth: str) -> Path:
    """A two-slice study (CT_small as template) of the given patient, encrypted to the x25519 identity."""
    files = synthesize_series(base / "src", n_slices=2, rows=16, columns=16)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, pid, birth
        ds.save_as(f)
    medsec_nb.encrypt_study(base / "src", base / "study.msec", recipients=[identities.x25519], progress=False)
    return base / "study.msec"


@pytest.fixture(scope="module")
def study(tmp_path_factory, identities) -> Path:
    return _study(tmp_path_factory.mktemp("forms"), identities, NAME, PID, BIRTH)


@pytest.fixture(scope="module")
def key_file(tmp_path_factory, identities) -> Path:
    return medsec_nb.save_identity(identities.x25519, tmp_path_factory.mktemp("key") / "analyst")[0]


@pytest.fixture(scope="module")
def kernel(study, key_file):
    """Another process with the study open and its fingerprints published, for the whole module."""
    assert redact_text("Mary-Kate O'Brien", guard.load_published(), guard.guard_key())[1] == 0
    proc = subprocess.Popen(
        [sys.executable, "-c", KERNEL, str(study), str(key_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MEDSEC_SAVE_GUARD_PUBLISH="1"),
    )  # a kernel stand-in
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.communicate("close\n", timeout=60)


@pytest.fixture(autouse=True)
def audit_log_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEC_AUDIT_LOG", str(tmp_path / "audit.jsonl"))


@pytest.fixture
def jp_server_config():
    return SERVER


def _stream(text: str | list[str]) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def _display(data: dict[str, Any]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _svg(title: str) -> str:
    """A real matplotlib SVG with ``title`` (glyphs drawn as paths: the text is only in a comment)."""
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_title(title)
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(out, format="svg")
    plt.close(fig)
    return out.getvalue()


def _svg_text(title: str) -> str:
    """The same with ``svg.fonttype = 'none'``: the title is a <text> element, XML-escaped."""
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_title(title)
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(out, format="svg")
    plt.close(fig)
    return out.getvalue()


def _iso(birth: str, case: Callable[[str], str]) -> str:
    return case(f"{birth[:4]}-{birth[4:6]}-{birth[6:]}T00:00:00")


#: Each form: outputs built from (name, id, birth date) in one case.
FORMS: dict[str, Callable[[str, str, str, Callable[[str], str]], list[dict[str, Any]]]] = {
    "ansi-stream": lambda n, i, b, c: [_stream(f"\x1b[31m{n}\x1b[0m \x1b[1m{i}\x1b[0m\n")],
    "ansi-traceback": lambda n, i, b, c: [
        {
            "output_type": "error",
            "ename": "KeyError",
            "evalue": f"'{i}'",
            "traceback": [f"\x1b[0;31mKeyError\x1b[0m: '\x1b[1;32m{i}\x1b[0m'", f"\x1b[0;32m{n}\x1b[0m"],
        }
    ],
    "html-entities": lambda n, i, b, c: [
        _display(
            {
                "text/html": f"<table><tr><td>{html.escape(n)}</td><td>{i}</td></tr></table>",
                "text/plain": f"{n.replace(chr(39), '&#39;')} {n.replace(chr(39), '&apos;').replace('-', '&#x2D;')}",
            }
        )
    ],
    "iso-datetime": lambda n, i, b, c: [
        _stream(f"born {_iso(b, c)}\n"),
        _display(
            {"text/plain": f"Timestamp('{_iso(b, c)}')", "text/html": f"<td>{_iso(b, c).replace('T00', 'T13')}</td>"}
        ),
        _stream(c(f"{b}T000000\n")),
    ],
    "json-keys": lambda n, i, b, c: [
        _display(
            {"application/json": {n: {i: 1, "birth": None}, i: [n]}, "text/plain": "<IPython.core.display.JSON object>"}
        )
    ],
    "svg-path": lambda n, i, b, c: [_display({"image/svg+xml": _svg(f"{n} {i}"), "text/plain": "<Figure>"})],
    "svg-text": lambda n, i, b, c: [_display({"image/svg+xml": _svg_text(f"{n} {i}"), "text/plain": "<Figure>"})],
    "two-lines-stream": lambda n, i, b, c: [
        _stream([f"{n.split('-')[0]}-\n", f"{n.split('-')[1]} born 27 " + c("Aug\n"), "1963\n"])
    ],
    "two-lines-text": lambda n, i, b, c: [
        _display(
            {
                "text/plain": [f"Name: {n.split('^')[0]}^Mary-\n", f"{n.split('^')[1].split('-')[1]}, ID {i}\n"],
                "text/html": [f"<td>{html.escape(n.split('^')[0])}</td>\n", f"<td>{n.split('^')[1]}</td>\n"],
            }
        )
    ],
}


async def _put(jp_fetch, name: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "c1",
                "execution_count": 1,
                "metadata": {},
                "source": "show(ct)",
                "outputs": outputs,
            }
        ],
    }
    await jp_fetch(
        "api", "contents", name, method="PUT", body=json.dumps({"type": "notebook", "format": "json", "content": nb})
    )
    return nb


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    return []


def _leaks(saved: dict[str, Any], leaks: tuple[str, ...] = LEAKS) -> set[str]:
    """Tokens of the values found in any string (keys included) of a saved notebook's outputs, with
    HTML entities undone and SVG path data (glyph outlines, whose coordinates may hold any digits) left out."""
    text = "\n".join(_strings([cell.get("outputs", []) for cell in saved["cells"]]))
    text = html.unescape(re.sub(r'\sd="[^"]*"', "", text)).casefold()
    return {t for t in leaks if t in text}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("form", FORMS)
async def test_each_form_is_redacted_on_save(jp_fetch, jp_root_dir, kernel, form, case):
    c = CASES[case]
    await _put(jp_fetch, f"{form}-{case}.ipynb", FORMS[form](c(NAME), c(PID), BIRTH, c))
    saved = json.loads((jp_root_dir / f"{form}-{case}.ipynb").read_text())
    assert _leaks(saved) == set() and MARKER in json.dumps(saved, ensure_ascii=False)
    nbformat.validate(nbformat.from_dict(saved))


async def test_redaction_keeps_the_rest_of_each_output(jp_fetch, jp_root_dir, kernel):
    """Escapes and markup around a value survive; colliding redacted JSON keys keep their values."""
    await _put(
        jp_fetch,
        "rest.ipynb",
        FORMS["ansi-stream"](NAME, PID, BIRTH, str)
        + FORMS["json-keys"](NAME, PID, BIRTH, str)
        + FORMS["html-entities"](NAME, PID, BIRTH, str),
    )
    outputs = json.loads((jp_root_dir / "rest.ipynb").read_text())["cells"][0]["outputs"]
    assert "".join(outputs[0]["text"]) == f"\x1b[31m{MARKER}\x1b[0m \x1b[1m{MARKER}\x1b[0m\n"
    data = outputs[1]["data"]["application/json"]
    assert sorted(data.values(), key=str) == [[MARKER], {MARKER: 1, "birth": None}]
    assert "".join(outputs[2]["data"]["text/html"]) == f"<table><tr><td>{MARKER}</td><td>{MARKER}</td></tr></table>"


def _with_chunks(png: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    """``png`` with ``chunks`` (type, data) inserted before its image data."""
    at = png.index(b"IDAT") - 4
    return (
        png[:at]
        + b"".join(
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
            for kind, data in chunks
        )
        + png[at:]
    )


async def test_png_text_chunks_holding_a_value_are_dropped(jp_fetch, jp_root_dir, kernel):
    """PNG pixels are not read (no OCR), but its text chunks are: those holding a value are dropped."""
    fig = plt.figure(figsize=(1, 1))
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    keep = (b"tEXt", b"Comment\x00slice 12 of 40")
    chunks = [
        (b"tEXt", b"Title\x00" + NAME.encode()),
        keep,
        (b"zTXt", b"Author\x00\x00" + zlib.compress(PID.lower().encode())),
        (b"iTXt", b"Description\x00\x00\x00en\x00\x00" + f"born {NAME.upper()} 1963-08-27".encode()),
        (b"iTXt", b"Source\x00\x01\x00\x00\x00" + zlib.compress(b"ID\n" + PID.encode())),
    ]
    png = _with_chunks(out.getvalue(), chunks)
    await _put(
        jp_fetch,
        "png.ipynb",
        [_display({"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure size 72x72 with 1 Axes>"})],
    )
    data = json.loads((jp_root_dir / "png.ipynb").read_text())["cells"][0]["outputs"][0]["data"]["image/png"]
    assert base64.b64decode(data) == _with_chunks(out.getvalue(), [keep])  # the same image otherwise


@pytest.mark.slow
async def test_a_real_kernel_s_coloured_html_json_iso_and_svg_outputs_are_redacted(
    jp_fetch, jp_root_dir, identities, key_file, tmp_path
):
    """The outputs a real kernel produces from its open study's header, saved as the front-end saves them
    (another patient than the module's stand-in kernel holds, so only this kernel's fingerprints count)."""
    study = _study(tmp_path, identities, "O'Neill^Anne-Marie", "MRN5582034", "19580412")
    cells = [
        (
            f"%load_ext medsec_nb.notebook.magics\n%config MedsecMagics.harden = False\n"
            f"%load_secure_study {study} -i {key_file} -p HRESCH --as ct"
        ),
        (
            "import datetime, html\nimport matplotlib.pyplot as plt\n"
            "from IPython.display import HTML, JSON, display\nfrom medsec_nb.saveguard import fingerprints as guard\n"
            "%matplotlib inline\n%config InlineBackend.figure_formats = ['svg']\n"
            "assert guard.wait(ct)\nds = ct.series[0].header(0)\n"
            "print(f'\\x1b[31m{ds.PatientName}\\x1b[0m \\x1b[1m{ds.PatientID}\\x1b[0m')\n"
            "display(HTML(f'<table><tr><td>{html.escape(str(ds.PatientName))}</td></tr></table>'))\n"
            "display(JSON({str(ds.PatientName): {ds.PatientID: 1}}))\n"
            "print(datetime.datetime.strptime(ds.PatientBirthDate, '%Y%m%d').isoformat())\n"
            "fig, ax = plt.subplots(figsize=(2, 2)); ax.set_title(f'{ds.PatientName} {ds.PatientID}'); plt.show()"
        ),
        "%unload_secure_study ct",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=60, kernel_name="python3")
    async with client.async_setup_kernel(env=dict(os.environ)):
        for index in (0, 1):
            await client.async_execute_cell(nb.cells[index], index)
        shown = json.dumps(nb.cells[1].outputs, ensure_ascii=False)
        for form in (
            "O'Neill^Anne-Marie\\u001b",
            "O&#x27;Neill",
            "1958-04-12T00:00:00",
            '"MRN5582034"',
            "<!-- O'Neill^Anne-Marie MRN5582034 -->",
        ):
            assert form in shown  # the analyst saw each form
        await jp_fetch(
            "api",
            "contents",
            "real.ipynb",
            method="PUT",
            body=json.dumps({"type": "notebook", "format": "json", "content": nb}),
        )
        await client.async_execute_cell(nb.cells[2], 2)
    saved = json.loads((jp_root_dir / "real.ipynb").read_text())
    assert _leaks(saved, ("neill", "anne", "marie", "5582034", "1958")) == set()
    assert [o["output_type"] for o in saved["cells"][1]["outputs"]] == [
        "stream",
        "display_data",
        "display_data",
        "stream",
        "display_data",
    ]
