#!/usr/bin/env bash
# Create .venv and install lossbench with every extra. Idempotent: reinstalls only when pyproject.toml or this script
# changed.
# torch is installed first with an exact pin: that takes the machine's local CPU wheel in seconds, whereas a bare
# `torch` requirement (pulled in by monai/kornia) with no torch installed would download a multi-GB CUDA build.
# Everything else is installed with a constraints file pinning the torch now in .venv, so that no dependency can
# replace it: the extra nnunet pulls nnunetv2 -> dynamic-network-architectures -> timm -> torchvision, and for the
# newest torchvision pip would swap in another multi-GB torch. With the pin pip takes the torchvision release made for
# this torch; PyPI only has its CUDA-linked build, so with a CPU torch `import torchvision` raises RuntimeError
# ("operator torchvision::nms does not exist"). Nothing lossbench or its tests run needs torchvision (MONAI and torch
# probe it and go on); nnU-Net's trainer lookup by name stops at a subpackage that imports timm, which is why
# `lossbench nnunet install` puts its module at the top of nnU-Net's trainer folder, searched before subpackages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.lossbench-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  .venv/bin/python -c "from importlib.metadata import version; print('torch==' + version('torch').split('+')[0])" \
    >"$constraints"
  .venv/bin/python -m pip install -q -c "$constraints" -e '.[dev,realdata,ray,nnunet]'
  echo "$want" > "$stamp"
fi
