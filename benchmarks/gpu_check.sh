#!/usr/bin/env bash
# GPU readiness check: trains UNet and ResNet-UNet briefly with the `full` preset (AMP on, and
# off for one of them) and prints samples/s, peak GPU memory and Set5/Set14 x2 PSNR-Y.
#
#   benchmarks/gpu_check.sh                       # one GPU: 3 runs x 100 s, under 8 minutes
#   benchmarks/gpu_check.sh --bench ../shared/datasets --budget 60
#   benchmarks/gpu_check.sh --tiny                # any machine, CPU too: seconds
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh      # the same
#
# All options: benchmarks/gpu_check.sh --help (they are benchmarks/gpu_check.py's). With OUT set
# (a GPU runner's results folder), the table goes to $OUT/gpu_check.md and the log to
# $OUT/gpu_check.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# srlib from this checkout, installed or not (a bare GPU machine has only the working tree).
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # progress lines as they happen, also through a pipe
python="${PYTHON:-$(command -v python || command -v python3)}"
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  "$python" "$here/gpu_check.py" "$@" 2>&1 | tee "$OUT/gpu_check.log"
else
  exec "$python" "$here/gpu_check.py" "$@"
fi
