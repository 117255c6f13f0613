#!/usr/bin/env bash
# Installs tellapart and its dependencies into ./.venv (Python >= 3.11).
# PyTorch is pinned to the builds this project is tested with.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e '.[dev]'
echo "tellapart installed in .venv: run .venv/bin/tellapart --help" >&2
