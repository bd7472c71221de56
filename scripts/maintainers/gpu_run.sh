#!/usr/bin/env bash
# The one command for a lent GPU machine (docs/gpu_run.md): the CUDA checks, then training the x4
# fidelity model at GPU scale until the deadline, results into $OUT (or --out DIR). Its Python is
# the machine's python3 (PYTHON overrides); the packed wheels are installed by gpu_run.py itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/maintainers/gpu_run.py "$@"
