#!/usr/bin/env bash
# Node memory of the weights with 2 ranks, model.weights mapped against resident (tests/bench/weights_mem.py),
# at the Pythia-1.4B shape by default (2.8 GB of bf16 written to the work directory).
# Usage: tests/bench/weights_mem.sh [BUILD_DIR] [--layers N] [--ranks R] [--workdir DIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
[ $# -gt 0 ] && shift
exec /usr/bin/python3 "$here/weights_mem.py" "$build/resae" "$@"
