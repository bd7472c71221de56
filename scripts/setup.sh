#!/usr/bin/env bash
# Create .venv (if needed) and install MRSuperResLib with its pinned torch and the test tools.
# pip's output is kept in a log: on success only a summary line shows; on failure the whole log is
# printed and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
fail() { cat "$LOG" >&2; echo "setup.sh: $1" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv >"$LOG" 2>&1 \
    || fail "could not create .venv with $PY (on Debian: apt install python3-venv)"
.venv/bin/python -m pip install -q --upgrade pip >"$LOG" 2>&1 || fail "could not upgrade pip in .venv"
# torch is pinned exactly: torch==2.13.0 is the CPU build these machines carry (for a GPU see the
# README, Install). PYTHONWARNINGS silences setuptools' informational "Editable installation" block,
# which warns about a folder named like the package in the working directory: here that folder is
# the package itself.
PYTHONWARNINGS=ignore::UserWarning .venv/bin/python -m pip install -q "torch==2.13.0" -e ".[test]" >"$LOG" 2>&1 \
    || fail "pip could not install the package and its dependencies (pip's output above)"
.venv/bin/python -c "import MRSuperResLib, torch; print('MRSuperResLib', MRSuperResLib.__version__, 'torch', torch.__version__)"
