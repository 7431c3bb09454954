#!/usr/bin/env bash
# TopK SAE training throughput: the C trainer against a PyTorch TopK SAE with the same recipe
# (dense autograd), same machine, same run, same thread count, same data and initial parameters.
#   tests/bench/sae_bench.sh [BUILD_DIR] [STEPS] [THREADS]
# Defaults: build, 30 steps, 1 thread; d=512, width 8192, k=64, batch 4096.
# Prints both rates (wall clock, and per CPU second, which is steadier on a shared machine), the
# speed ratios, the final-FVU difference, and the encoder GEMM's share of
# the C step and its GFLOP/s against a standalone SGEMM of the same shape.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
steps=${2:-30}
threads=${3:-1}
d=512 n=8192 k=64 batch=4096
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(RESAE_NO_BLAS_GUARD=1 "$build/resae" version | sed -n 's/^cpu: .*best OpenBLAS kernel set: \([A-Za-z]*\).*/\1/p')} OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
out=$(mktemp -d /tmp/sae_bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "== C trainer ($steps steps, $threads thread(s))"
"$build/tests/bench/sae_bench" "$out" --d $d --n $n --k $k --batch $batch --steps $steps --pool 32768 --write
echo "== PyTorch reference"
/usr/bin/python3 "$here/sae_bench.py" "$out" $d $n $k $batch $steps $threads
get() { sed -n "s/^$2 //p" "$out/$1"; }
c_tps=$(get c_result.txt tokens_per_s) p_tps=$(get py_result.txt tokens_per_s)
c_cps=$(get c_result.txt tokens_per_cpu_s) p_cps=$(get py_result.txt tokens_per_cpu_s)
c_fvu=$(get c_result.txt fvu) p_fvu=$(get py_result.txt fvu)
echo "== result"
awk -v c="$c_tps" -v p="$p_tps" -v cc="$c_cps" -v pc="$p_cps" -v cf="$c_fvu" -v pf="$p_fvu" -v s="$(get c_result.txt step_over_gemm)" \
    -v g="$(get c_result.txt gemm_gflops)" 'BEGIN {
  printf "tokens/s (wall): C %.0f, PyTorch %.0f, ratio %.2fx\n", c, p, c / p;
  printf "tokens per CPU second: C %.0f, PyTorch %.0f, ratio %.2fx\n", cc, pc, cc / pc;
  printf "final FVU: C %.4f, PyTorch %.4f, |diff| %.4f\n", cf, pf, (cf > pf ? cf - pf : pf - cf);
  printf "C step / its encoder GEMM (CPU time): %.2fx; standalone SGEMM %.1f GFLOP/s\n", s, g }'
