#!/usr/bin/env bash
# medsec-nb developer entry point: `./dev.sh run` (demo) and `./dev.sh test` (every test).
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
    setup
    shift
    exec "$VENV/bin/python" -m medsec_nb.demo "$@"
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
