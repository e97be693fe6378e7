#!/usr/bin/env bash
# One prepared GPU check (a few minutes): builds, verifies and benches eager fp16 against AOTInductor
# fp16/bf16 at 0.5/2/10 s and for 0.25 s blocks on this machine's GPU; writes benchmarks/results/gpu_check.json.
# Needs only CUDA PyTorch and numpy (plus pyyaml, which transformers brings): run it from a checkout,
#     bash benchmarks/gpu_check.sh [--out FILE] [--repeat N]
# `--device cpu --size small` runs the same path on a CPU (what the test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
