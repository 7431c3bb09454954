#!/usr/bin/env bash
# What the BLAS guard is worth: SGEMM GFLOP/s with OpenBLAS's generic "Prescott" kernels (what
# Debian's OpenBLAS 0.3.21 falls back to on CPUs it misdetects) against the kernels `resae version`
# selects on this machine, same thread count, same run.
# usage: tests/bench/blas_guard_bench.sh [BUILD_DIR] [N] [THREADS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
n=${2:-1024}
export OPENBLAS_NUM_THREADS=${3:-1}
native=$(env -u OPENBLAS_CORETYPE "$build/resae" version | sed -n 's/^blas: OpenBLAS kernels \([^ ]*\) .*/\1/p')
echo "resae version selects: $native ($(env -u OPENBLAS_CORETYPE "$build/resae" version | grep '^blas:'))"
echo "without the guard:     $(env -u OPENBLAS_CORETYPE RESAE_NO_BLAS_GUARD=1 "$build/resae" version | grep '^blas:')"
g=$(OPENBLAS_CORETYPE=Prescott "$build/tests/bench/bench_sgemm" "$n" 5)
f=$(OPENBLAS_CORETYPE=$native "$build/tests/bench/bench_sgemm" "$n" 5)
echo "$g"
echo "$f"
/usr/bin/python3 -c "import sys; g=float(sys.argv[1]); f=float(sys.argv[2]); print(f'native/generic SGEMM ratio: {f/g:.2f}x')" \
  "$(sed -E 's/.*: ([0-9.]+) GFLOP.*/\1/' <<<"$g")" "$(sed -E 's/.*: ([0-9.]+) GFLOP.*/\1/' <<<"$f")"
