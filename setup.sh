#!/usr/bin/env bash
# Installs tellapart and its dependencies into ./.venv (Python >= 3.11).
# PyTorch is pinned to the builds this project is tested with. Run as root on Debian, it also
# installs the system packages the tests use (Chromium for the browser tests, Fashion-MNIST for
# the real-data tests), so `.venv/bin/python -m pytest` passes on a fresh machine; elsewhere it
# says what to install.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages the tests use: ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "note: the tests also need these Debian packages: ${need[*]} (apt-get install -y ${need[*]})" >&2
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e '.[dev]'
echo "tellapart installed in .venv: run .venv/bin/tellapart --help" >&2
