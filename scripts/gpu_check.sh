#!/usr/bin/env bash
# GPU check in one command: the CUDA tests (`pytest -m cuda`) and the CUDA benchmark (`lossbench bench --device cuda`).
# Takes a few minutes on an H100/H200-class GPU. Needs an environment with lossbench's dependencies and a CUDA torch
# (.venv from scripts/setup.sh, or set PYTHON=/path/to/python).
#
#   bash scripts/gpu_check.sh [OUT_DIR] [extra `lossbench bench` arguments, e.g. --repeats 10]
#
# Writes OUT_DIR (default reports/bench-cuda): bench.json, bench.md, bench.log, pytest-cuda.txt, nvidia-smi.txt.
# Exits non-zero when there is no CUDA device, when a CUDA test fails (or none is collected), or when the benchmark
# reports an error; both parts always run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-reports/bench-cuda}
[ $# -gt 0 ] && shift
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1))" >&2
  exit 3
fi
mkdir -p "$OUT"
"$PY" -c 'import torch; print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")'
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

# pytest exits 5 when no test is collected: that fails the check instead of passing silently.
"$PY" -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest-cuda.txt"
tests_rc=${PIPESTATUS[0]}
"$PY" -m lossbench bench --device cuda --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu_check: pytest -m cuda exit ${tests_rc}, lossbench bench exit ${bench_rc}; results in ${OUT}"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
