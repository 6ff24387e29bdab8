"""JupyterLab server for the Galata tests: 127.0.0.1, no token (Galata's settings), a fresh
medsec data folder and audit log, and the demo study built into ui-tests/demo."""

import os
import tempfile
from pathlib import Path

from jupyterlab.galata import configure_jupyter_server

from medsec_nb.cli.demo import build_demo

_data = tempfile.mkdtemp(prefix="medsec-ui-data-")
os.environ["MEDSEC_DATA_DIR"] = _data
os.environ["MEDSEC_AUDIT_LOG"] = os.path.join(_data, "audit.jsonl")
build_demo(Path(__file__).parent / "demo", slices=8)

configure_jupyter_server(c)  # noqa: F821 (c is the config object)
c.ServerApp.ip = "127.0.0.1"  # noqa: F821
c.ServerApp.port = 8888  # noqa: F821
c.ServerApp.allow_root = True  # noqa: F821
c.ServerApp.open_browser = False  # noqa: F821
