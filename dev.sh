#!/usr/bin/env bash
# medsec-nb developer entry point: `./dev.sh run` (demo in JupyterLab) and `./dev.sh test` (every test).
# Each sets up its own virtual environment in .venv on first use.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # Reinstall when the project metadata changed since the last setup.
  local stamp="$VENV/.medsec-setup"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    touch "$stamp"
  fi
}

case "${1:-}" in
  run)
    # Build the demo study (keys, container, audit log in ./demo), print its redacted summary,
    # then open JupyterLab on the starter notebook. `./dev.sh run --headless` stops after the summary.
    setup
    shift
    "$VENV/bin/python" -m medsec_nb.demo --dir demo
    if [ "${1:-}" = "--headless" ]; then exit 0; fi
    export MEDSEC_AUDIT_LOG="${MEDSEC_AUDIT_LOG:-$PWD/demo/audit.jsonl}"
    extra=()
    [ "$(id -u)" = 0 ] && extra+=(--allow-root)
    exec "$VENV/bin/jupyter" lab --ip 127.0.0.1 --no-browser "${extra[@]}" \
      --ServerApp.root_dir="$PWD" notebooks/00_start_here.ipynb
    ;;
  test)
    setup
    shift
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh run | test [pytest args]" >&2
    exit 2
    ;;
esac
