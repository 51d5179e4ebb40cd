#!/usr/bin/env bash
# Create .venv and install lossbench with every extra. Idempotent: reinstalls only when pyproject.toml changed.
# torch is installed first with an exact pin: that takes the machine's local CPU wheel in seconds, whereas a bare
# `torch` requirement (pulled in by monai/kornia) with no torch installed would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.lossbench-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[dev,realdata,ray]'
  echo "$want" > "$stamp"
fi
