"""The notebooks leave no plaintext DICOM on disk, at the end or while they run.

Every ``notebooks/*.ipynb`` (found when the tests are collected, so new notebooks are covered)
runs once more with nbclient in a real kernel whose temporary folder (``TMPDIR``), working
directory and medsec data folder are fresh folders under ``tmp_path``. That tree is watched
while the notebook runs: scanned after every cell and polled every 0.1 s in between (a file
that lives for less than a poll inside one cell can slip through). A file is plaintext DICOM if
it has the ``DICM`` marker at byte 128, or if pydicom reads it (``force=True``) as a dataset
with Pixel Data. The one exception is the store of a PACS a notebook runs (``PACS_STORES``).

Cost: each notebook runs a second time (nbval runs it too), about as long as its nbval run:
about 50 s for notebooks 00-06 on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path

import nbformat
import pydicom
import pytest
from nbclient import NotebookClient

import medsec_nb
from medsec_nb.container.writer import encrypt_datasets
from medsec_nb.testdata import synthesize_datasets, synthesize_series

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
POLL_SECONDS = 0.1
#: A notebook that runs a PACS (a stand-in for the hospital's, which holds plaintext studies by
#: definition) names the PACS's own store here; every other file it writes is checked.
PACS_STORES = {"06_pacs.ipynb": re.compile(r"tmp/pacs-demo-[^/]+/(clinical|research)/storage/")}


def is_plaintext_dicom(path: Path) -> bool:
    """True for a DICOM file (Part 10 preamble) or any file pydicom reads as a dataset with pixels."""
    try:
        with open(path, "rb") as f:
            if f.read(132)[128:132] == b"DICM":
                return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, defer_size=256)
        return "PixelData" in ds
    except Exception:  # unreadable, gone, or not DICOM at all
        return False


class Watch:
    """Finds plaintext DICOM under ``root``, now (:meth:`scan`) and in the background (``with``)."""

    def __init__(self, root: Path):
        self.root = root
        self.found: set[str] = set()
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def scan(self) -> None:
        with self._lock:
            for folder, _, names in os.walk(self.root):
                for name in names:
                    path = Path(folder, name)
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    if self._seen.get(str(path)) != (st.st_size, st.st_mtime_ns):
                        self._seen[str(path)] = (st.st_size, st.st_mtime_ns)
                        if is_plaintext_dicom(path):
                            self.found.add(str(path.relative_to(self.root)))

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.scan()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.scan()


def run_watched(notebook: Path, root: Path) -> set[str]:
    """Run ``notebook`` in a kernel whose temporary folder, working directory and data folder are
    fresh folders under ``root``; return the plaintext DICOM files seen there (relative to ``root``).
    The working directory is ``root/work/notebooks`` so that ``../x`` paths stay under ``root``."""
    tmp, data, cwd = root / "tmp", root / "data", root / "work" / "notebooks"
    for folder in (tmp, data, cwd):
        folder.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp), "MEDSEC_DATA_DIR": str(data)}
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    with Watch(root) as watch, client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            watch.scan()
    return watch.found


def test_every_notebook_is_checked():
    assert {p.name for p in NOTEBOOKS} >= {"00_start_here.ipynb", "01_encryption_walkthrough.ipynb"}


def test_detector_finds_plaintext_and_passes_containers(tmp_path):
    files = synthesize_series(tmp_path / "src", n_slices=2, rows=16, columns=16)
    bare = tmp_path / "bare"  # no preamble, no file meta: found by reading it
    bare.write_bytes(files[0].read_bytes()[132:])
    me = medsec_nb.generate_identity("x25519")
    study = encrypt_datasets(
        synthesize_datasets(2, rows=16, columns=16), tmp_path / "s.msec", [me.public], progress=False
    )
    text = tmp_path / "notes.txt"
    text.write_text("DICM " * 100)
    assert is_plaintext_dicom(files[0]) and is_plaintext_dicom(bare)
    assert not is_plaintext_dicom(study) and not is_plaintext_dicom(text)


@pytest.mark.slow
def test_watch_catches_a_file_deleted_within_a_cell(tmp_path):
    """A cell that writes a plaintext series to the temporary folder and removes it before it ends
    (as the old cohort notebook did) is caught."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import shutil, tempfile, time\n"
                "from medsec_nb.testdata import synthesize_series\n"
                "d = tempfile.mkdtemp()\n"
                "synthesize_series(d, n_slices=1, rows=16, columns=16)\n"
                "time.sleep(1)\n"
                "shutil.rmtree(d)"
            )
        ]
    )
    path = tmp_path / "leaky.ipynb"
    nbformat.write(nb, path)
    found = run_watched(path, tmp_path / "run")
    assert len(found) == 1 and next(iter(found)).startswith("tmp/")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_leaves_no_plaintext_dicom(notebook, tmp_path):
    store = PACS_STORES.get(notebook.name)
    found = {p for p in run_watched(notebook, tmp_path) if not (store and store.match(p))}
    assert not found, f"{notebook.name} wrote plaintext DICOM (paths under its fresh folders): {sorted(found)}"
