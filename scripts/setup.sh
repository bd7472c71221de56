#!/usr/bin/env bash
# Create .venv (if needed) and install MRSuperResLib with its pinned torch and test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned exactly: torch==2.13.0 is the CPU build these machines carry (see README)
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[test]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import MRSuperResLib, torch; print('MRSuperResLib', MRSuperResLib.__version__, 'torch', torch.__version__)"
