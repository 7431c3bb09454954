#!/usr/bin/env bash
# The numbers behind the BLAS guard's table: SGEMM GFLOP/s of one kernel set per instruction-set
# class this CPU runs (Prescott = SSE, Sandybridge = AVX, Haswell = AVX2, SkylakeX = AVX-512), each
# the median of REPEATS runs of bench_sgemm (best of 5 inside), and the ratio of each to Prescott and
# to the best, all in the same run on this machine. Also what `resae version` selects with the
# variable unset and as the environment gives it.
# usage: tests/bench/blas_guard_bench.sh [BUILD_DIR] [N] [THREADS] [REPEATS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
n=${2:-1024}
export OPENBLAS_NUM_THREADS=${3:-1}
reps=${4:-3}
bench=$build/tests/bench/bench_sgemm
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "unset:       $(env -u OPENBLAS_CORETYPE "$build/resae" version 2>&1 | grep '^blas:')"
echo "environment: $("$build/resae" version 2>&1 | grep -E '^(blas|warning|error):' | tr '\n' ' ')"
level=$(env -u OPENBLAS_CORETYPE RESAE_NO_BLAS_GUARD=1 "$build/resae" version | sed -n 's/^cpu: \([^ ]*\) .*/\1/p')
sets=(Prescott Sandybridge Haswell SkylakeX)
case $level in AVX) sets=(Prescott Sandybridge) ;; AVX2) sets=(Prescott Sandybridge Haswell) ;; SSE) sets=(Prescott) ;; esac
declare -A rate
for c in "${sets[@]}"; do
  runs=()
  for ((r = 0; r < reps; r++)); do
    runs+=("$(OPENBLAS_CORETYPE=$c "$bench" "$n" 5 | sed -E 's/.*: ([0-9.]+) GFLOP.*/\1/')")
  done
  rate[$c]=$(printf '%s\n' "${runs[@]}" | sort -g | sed -n "$(( (reps + 1) / 2 ))p")
  echo "kernels $c: SGEMM ${n}^3, $OPENBLAS_NUM_THREADS thread(s): runs ${runs[*]} GFLOP/s, median ${rate[$c]}"
done
best=${sets[-1]}
for c in "${sets[@]}"; do
  /usr/bin/python3 -c "import sys; r,p,b=map(float,sys.argv[1:4]); print(f'{sys.argv[4]}: {r/p:.2f}x Prescott, {b/r:.2f}x slower than {sys.argv[5]}')" \
    "${rate[$c]}" "${rate[Prescott]}" "${rate[$best]}" "$c" "$best"
done
