#!/usr/bin/env bash
# Tokens/s of `resae forward` against the PyTorch reference at 1 and 2 BLAS threads (same run, same
# OpenBLAS kernels). Usage: tests/bench/forward_bench.sh [BUILD_DIR] [--arch neox|gemma2] [--shape small|pythia-1.4b] [--repeats N] [--threads 1,2]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
[ $# -gt 0 ] && shift
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(RESAE_NO_BLAS_GUARD=1 "$build/resae" version | sed -n 's/^cpu: .*best OpenBLAS kernel set: \([A-Za-z]*\).*/\1/p')}
exec /usr/bin/python3 "$here/forward_bench.py" "$build/resae" "$@"
