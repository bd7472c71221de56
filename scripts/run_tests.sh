#!/usr/bin/env bash
# README command 2: set up, then run every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q -p no:cacheprovider Testing/Python "$@"
