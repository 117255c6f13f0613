#!/usr/bin/env bash
# GPU readiness check: training images/s of the seeds' models (s0, s1, s3) on CUDA, and `prepare`
# with nvJPEG against Pillow at 64 and 150 px. Sized to finish in under 8 minutes on one H200
# (3 fresh-process repetitions per figure, as bench/_method.py requires).
#
#   bash bench/gpu_check.sh            # from the repository root; PYTHON=... to pick the interpreter
#
# Exits 2 with a message, before doing anything, when PyTorch sees no CUDA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: PyTorch ($PYTHON) sees no CUDA GPU here; this check needs one (nothing was run)." >&2
    exit 2
fi
"$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'

echo "== training on CUDA (tellapart side; the benchmark venv's TensorFlow is CPU-only)"
timeout 270 "$PYTHON" bench/bench_train.py --models s0 s1 s3 --sides tellapart --device cuda --steps 100 --epochs 3 --repeats 3

echo "== prepare: nvJPEG (cuda) vs Pillow (cpu), 400 1024x1024 JPEGs, 2 cores"
work="$(mktemp -d /tmp/tellapart-gpu-check-XXXXXX)"
for device in cuda cpu; do
    timeout 90 "$PYTHON" bench/bench_prepare.py --work "$work" --images 400 --sizes 64 150 --cores 2 --repeats 3 \
        --sides tellapart --decode-device "$device" --skip-reads
done
rm -rf "$work"
