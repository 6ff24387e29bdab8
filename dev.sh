#!/usr/bin/env bash
# medsec-nb developer entry point: `./dev.sh run` (demo in JupyterLab) and `./dev.sh test` (every test;
# `./dev.sh test -m "not slow"` is the quick local loop, `./dev.sh test tests/test_x.py` runs only that file).
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

# Build the JupyterLab extension (labextension/) when its sources changed, and make this venv's
# JupyterLab load the build (a link into share/jupyter/labextensions).
LAB=labextension
BUILT=medsec_nb/labextension
build_lab() {
  export PATH="$PWD/$VENV/bin:$PATH"
  if [ ! -f "$LAB/node_modules/.medsec-installed" ] || [ "$LAB/package.json" -nt "$LAB/node_modules/.medsec-installed" ] \
      || [ "$LAB/yarn.lock" -nt "$LAB/node_modules/.medsec-installed" ]; then
    (cd "$LAB" && jlpm install) && touch "$LAB/node_modules/.medsec-installed"
  fi
  if [ ! -f "$BUILT/static/style.js" ] || [ -n "$(find "$LAB/src" "$LAB/style" "$LAB/schema" "$LAB/package.json" \
      -newer "$BUILT/static/style.js" | head -n 1)" ]; then
    (cd "$LAB" && jlpm build:prod)
  fi
  cp "$LAB/install.json" "$BUILT/install.json"
  local dest="$VENV/share/jupyter/labextensions/medsec-nb"
  if [ "$(readlink "$dest" 2>/dev/null)" != "$PWD/$BUILT" ]; then
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    ln -s "$PWD/$BUILT" "$dest"
  fi
}

# Browser tests: Debian's chromium (Playwright cannot download browsers here) and Galata.
setup_ui() {
  if [ ! -x /usr/lib/chromium/chromium ]; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  fi
  local ui="$LAB/ui-tests"
  if [ ! -f "$ui/node_modules/.medsec-installed" ] || [ "$ui/package.json" -nt "$ui/node_modules/.medsec-installed" ] \
      || [ "$ui/yarn.lock" -nt "$ui/node_modules/.medsec-installed" ]; then
    (cd "$ui" && jlpm install) && touch "$ui/node_modules/.medsec-installed"
  fi
}

# The key service's JupyterHub tests: configurable-http-proxy from npm, in the venv, on PATH.
setup_hub_proxy() {
  if [ ! -x "$VENV/chp/node_modules/.bin/configurable-http-proxy" ]; then
    npm install --silent --prefix "$VENV/chp" configurable-http-proxy >/dev/null
  fi
  export PATH="$PWD/$VENV/chp/node_modules/.bin:$PATH"
}

# The key service's Hub tests spawn users' servers as those OS users, who cannot enter /root (where the
# default python3 lives): an environment from Debian's /usr/bin/python3 in a world-readable folder, with
# jupyterhub-singleuser, ipykernel and medsec_nb's dependencies (installed when that list changes) and a
# plain copy of medsec_nb (recopied when it differs from this checkout's, which they may not be able to read).
USER_ENV=/opt/medsec-user-env
setup_user_env() {
  local py="$USER_ENV/bin/python" want site
  [ -x "$py" ] || /usr/bin/python3 -m venv "$USER_ENV"
  want=$(/usr/bin/python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))'
    echo ipykernel; echo jupyter_server
    echo "jupyterhub==$("$VENV/bin/python" -c 'import jupyterhub; print(jupyterhub.__version__)')")
  if [ "$want" != "$(cat "$USER_ENV/requirements.txt" 2>/dev/null)" ]; then
    printf '%s\n' "$want" >"$USER_ENV/requirements.new"
    "$py" -m pip install -q -r "$USER_ENV/requirements.new"
    mv "$USER_ENV/requirements.new" "$USER_ENV/requirements.txt"
  fi
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if ! diff -rq -x __pycache__ medsec_nb "$site/medsec_nb" >/dev/null 2>&1; then
    rm -rf "$site/medsec_nb.new"
    cp -r medsec_nb "$site/medsec_nb.new"
    find "$site/medsec_nb.new" -name __pycache__ -prune -exec rm -rf {} +
    chmod -R a+rX "$site/medsec_nb.new"
    rm -rf "$site/medsec_nb" && mv "$site/medsec_nb.new" "$site/medsec_nb"
  fi
}

# The PACS tests' real Orthanc (with its DICOMweb plugin): Debian's packages, installed when missing.
setup_orthanc() {
  if [ ! -x /usr/sbin/Orthanc ] || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    apt-get install -y -q orthanc orthanc-dicomweb >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q orthanc orthanc-dicomweb >/dev/null; }
  fi
}

case "${1:-}" in
  run)
    # Build the demo study (keys, container, audit log in ./demo), print its redacted summary,
    # then open JupyterLab on the starter notebook. `./dev.sh run --headless` stops after the summary.
    setup
    build_lab
    shift
    "$VENV/bin/python" -m medsec_nb.cli.demo --dir demo
    if [ "${1:-}" = "--headless" ]; then exit 0; fi
    export MEDSEC_AUDIT_LOG="${MEDSEC_AUDIT_LOG:-$PWD/demo/audit.jsonl}"
    extra=()
    [ "$(id -u)" = 0 ] && extra+=(--allow-root)
    exec "$VENV/bin/jupyter" lab --ip 127.0.0.1 --no-browser "${extra[@]}" \
      --ServerApp.root_dir="$PWD" notebooks/00_start_here.ipynb
    ;;
  test)
    # pytest, then (unless pytest was given particular tests) jest and the Galata browser tests.
    setup
    build_lab
    setup_hub_proxy
    setup_user_env
    setup_orthanc
    shift
    targeted=0
    for arg in "$@"; do case "$arg" in -*) ;; *) targeted=1 ;; esac; done
    before=$(git status --porcelain 2>/dev/null || true)
    if [ "$targeted" = 0 ]; then
      # the house's checks: layers (import-linter), lint and format (ruff), types (mypy, strict below the faces)
      "$VENV/bin/lint-imports" --no-cache
      "$VENV/bin/ruff" check medsec_nb tests bench conftest.py
      "$VENV/bin/ruff" format --check medsec_nb tests bench conftest.py
      "$VENV/bin/mypy"
    fi
    "$VENV/bin/python" -m pytest "$@"
    if [ "$targeted" = 0 ]; then
      (cd "$LAB" && jlpm test)
      setup_ui
      (cd "$LAB/ui-tests" && jlpm test)
    fi
    # tests write their artefacts outside the tracked tree: the checkout is as it was
    after=$(git status --porcelain 2>/dev/null || true)
    if [ "$before" != "$after" ]; then
      echo "dev.sh: the tests changed the checkout (git status differs):" >&2
      diff <(echo "$before") <(echo "$after") >&2 || true
      exit 1
    fi
    ;;
  *)
    echo "usage: ./dev.sh run | test [pytest args]" >&2
    exit 2
    ;;
esac
