#!/usr/bin/env bash
# The SAE training step at the paper's shapes against its encoder GEMM alone (the C trainer, one
# thread, the paper's global batch of 4096 tokens):
#   Pythia-1.4B  d = 2048, width 16 x d = 32768, k = 160
#   Gemma-2-9B   d = 3584, width 16 x d = 57344, k = 160
#   tests/bench/sae_paper_shapes.sh [BUILD_DIR] [STEPS]      (default 3 steps: ~1 and ~2 minutes)
# Prints each shape's "step / GEMM" ratio (CPU time of a whole step over its encoder SGEMM's) and the
# GEMM's rate against a standalone SGEMM of the same shape, measured in the same run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
steps=${2:-3}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
out=$(mktemp -d /tmp/sae_paper.XXXXXX)
trap 'rm -rf "$out"' EXIT
for shape in "pythia-1.4b 2048 32768" "gemma-2-9b 3584 57344"; do
  set -- $shape
  echo "== $1: d $2, width $3, k 160, batch 4096, $steps steps"
  mkdir -p "$out/$1"
  "$build/tests/bench/sae_bench" "$out/$1" --d "$2" --n "$3" --k 160 --batch 4096 --steps "$steps" --pool 8192 |
    grep -E '^C: [0-9]+ steps|step / GEMM|standalone SGEMM'
done
