#!/usr/bin/env bash
# Throughput of the CE splice passes against the plain forward pass on the same tokens (bench_eval),
# on the random d=512, 8-layer, vocab 50304 model of forward_bench.py (created on first use), plus the
# tokens/s `resae forward` itself reports on those tokens.
# usage: tests/bench/eval_bench.sh [BUILD_DIR] [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
work=${2:-/tmp/resae-eval-bench}
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(RESAE_NO_BLAS_GUARD=1 "$build/resae" version | sed -n 's/^cpu: .*best OpenBLAS kernel set: \([A-Za-z]*\).*/\1/p')} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
mkdir -p "$work"
/usr/bin/python3 - "$work" <<'PY'
import sys, os
sys.path.insert(0, os.path.join(os.environ.get("PWD", "."), "tests", "bench"))
sys.path.insert(0, os.path.join(os.environ.get("PWD", "."), "tests", "reference"))
import forward_bench
forward_bench.prepare(sys.argv[1])
PY
"$build/tests/bench/bench_eval" "$work/model" "$work/tokens.h5" 4 4 32 ${REPEATS:-5}
"$build/resae" forward --model "$work/model" --tokens "$work/tokens.h5" --out "$work/fwd.h5" --batch 4 --max-seqs 8 2>&1 |
  grep -Eo "done in .*tok/s\)" | sed 's/^/resae forward on the same tokens: /' || true
