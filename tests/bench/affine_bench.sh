#!/usr/bin/env bash
# Affine-fit benchmarks: Gram accumulation against plain DSYRK, and the distributed solve at 1 and 2
# ranks against serial dposv_ (each prints its ratio). Usage: tests/bench/affine_bench.sh [BUILD_DIR]
# Busy machines: Open MPI busy-polls while waiting, which starves the rank doing the work when the
# cores are shared; mpi_yield_when_idle=1 lets a waiting rank give its core back.
set -euo pipefail
build=${1:-$(cd "$(dirname "$0")/../.." && pwd)/build}
bench=$build/tests/bench/bench_affine
[ -x "$bench" ] || { echo "no $bench: build first (cmake --build $build)" >&2; exit 1; }
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(RESAE_NO_BLAS_GUARD=1 "$build/resae" version | sed -n 's/^cpu: .*best OpenBLAS kernel set: \([A-Za-z]*\).*/\1/p')}
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RESAE_LOG_LEVEL=warn
mpi=(mpirun --oversubscribe --bind-to none --mca btl self,vader --mca mpi_yield_when_idle 1)
"${mpi[@]}" -n 1 "$bench" gram 1024 65536
for d in 1024 2048; do
  for np in 1 2; do "${mpi[@]}" -n $np "$bench" solve $d; done
done
