#!/usr/bin/env bash
# One copy of the weights per node: the checkpoint's read-only mapping (resae's model.weights: mapped)
# against an MPI-3 shared-memory window filled by one rank, side by side on the same BF16 file.
#   tests/bench/weights_shm.sh [BUILD_DIR] [FILE] [RANKS] [PASSES]
# FILE defaults to the Pythia-1.4B-shaped checkpoint tests/bench/weights_mem.sh writes. Before each
# mode the page cache is dropped when the machine allows it (root, /proc/sys/vm/drop_caches), so both
# start cold; otherwise both start with the file cached and the script says so.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
file=${2:-/tmp/resae_weights_mem/neox_shape_24l/model.safetensors}
ranks=${3:-2} passes=${4:-2}
[ -f "$file" ] || { echo "no checkpoint $file: run tests/bench/weights_mem.sh first" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for mode in mapped window; do
  if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then echo "== $mode (page cache dropped)"
  else echo "== $mode (page cache not dropped: not permitted here)"; fi
  mpirun --oversubscribe --bind-to none -n "$ranks" "$build/tests/bench/bench_weights_shm" "$file" "$mode" "$passes"
done
