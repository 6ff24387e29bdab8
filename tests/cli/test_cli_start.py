"""A fast start for ``medsec`` (issue 14 item 5): building the parser and ``medsec inspect`` load
no pydicom, casbin, numpy or Jupyter; every command's help still works. Fresh processes, no clock:
bench/bench_cli.py measures the time."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import medsec_nb.deid
import medsec_nb.keys
from medsec_nb.cli.deid import OPTIONS
from medsec_nb.cli.main import KEY_TYPES, build_parser

#: Top-level packages the parser and ``inspect`` must not import.
HEAVY = ("pydicom", "casbin", "numpy", "IPython", "ipykernel", "ipywidgets", "jupyter_core", "jupyter_server")

#: Runs ``medsec_nb.cli.main.main`` on each argument list of argv[2] (JSON) in this one process,
#: then writes the exit codes and the imported top-level packages as JSON to argv[1].
WRAPPER = """\
import json, sys
from medsec_nb.cli.main import main
codes = []
for argv in json.loads(sys.argv[2]):
    try:
        codes.append(main(argv))
    except SystemExit as exc:
        codes.append(exc.code)
with open(sys.argv[1], "w") as fh:
    json.dump({"codes": codes, "packages": sorted({m.split(".")[0] for m in sys.modules})}, fh)
"""


def run_fresh(tmp_path: Path, *argvs: list[str]) -> tuple[list[int], list[str], str]:
    """Exit codes, imported top-level packages and standard output of ``argvs`` run by ``medsec``'s
    main in one new interpreter."""
    out = tmp_path / "modules.json"
    r = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(out), json.dumps([[str(a) for a in argv] for argv in argvs])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and out.exists(), r.stderr
    result = json.loads(out.read_text())
    return result["codes"], result["packages"], r.stdout


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of ``parser``, e.g. ("inspect",), ("audit", "show")."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += commands(sub, (*prefix, name))
    return found


def test_parser_constants_match_the_library():
    assert medsec_nb.keys.KEY_TYPES == KEY_TYPES
    assert tuple(sorted(medsec_nb.deid.OPTIONS)) == OPTIONS


def test_help_loads_nothing_heavy(tmp_path):
    codes, packages, stdout = run_fresh(tmp_path, ["--help"])
    assert codes == [0] and "typical session of a data steward" in stdout
    assert not set(HEAVY) & set(packages)


def test_inspect_loads_nothing_heavy(tmp_path, signed_container, passphrase_container):
    codes, packages, stdout = run_fresh(
        tmp_path, ["inspect", signed_container], ["inspect", passphrase_container, "--json"]
    )
    assert codes == [0, 0]
    assert "(valid over header)" in stdout and '"passphrase": true' in stdout
    assert not set(HEAVY) & set(packages)


def test_every_command_help(tmp_path):
    found = commands(build_parser())
    assert {
        ("inspect",),
        ("deid",),
        ("audit",),
        ("audit", "export"),
        ("reidentify",),
        ("keyservice",),
        ("rewrap",),
        ("receive",),
        ("push",),
    } <= set(found)
    assert len(found) == 19
    codes, packages, stdout = run_fresh(tmp_path, *[[*cmd, "--help"] for cmd in found])
    assert codes == [0] * len(found)
    for cmd in found:
        assert f"usage: medsec {' '.join(cmd)} " in stdout
    assert not set(HEAVY) & set(packages)


@pytest.mark.parametrize("argv", [[], ["audit"], ["keygen"], ["deid", "x", "--option", "nope"]])
def test_usage_errors_load_nothing_heavy(tmp_path, argv):
    codes, packages, _ = run_fresh(tmp_path, argv)
    assert codes == [2]
    assert not set(HEAVY) & set(packages)
