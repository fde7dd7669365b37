#!/usr/bin/env bash
# Install the project into ./.venv. torch goes in FIRST and pinned: an unpinned torch
# requirement pulls several GB of CUDA wheels; torch==2.13.0 resolves to the local CPU wheel here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q -e ".[ml,dev]"
echo "installed into $(pwd)/.venv"
