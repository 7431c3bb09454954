#!/usr/bin/env bash
# The pipeline at full model shape on 2 ranks, with the memory plan checked against the measured
# peaks and the per-stage rates for the cost model (tests/bench/rehearsal.py, docs/scaling.md).
#   tests/bench/rehearsal.sh [BUILD_DIR] [--arch neox|gemma2] [--rates-out FILE] [rehearsal.py options]
# Pythia-1.4B shape: 2.8 GB of disk, ~15 minutes on 2 cores; Gemma-2-9B shape: 18.5 GB of disk and
# ~16 GB of memory, ~25 minutes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
[ $# -gt 0 ] && shift
exec /usr/bin/python3 "$here/rehearsal.py" "$build/resae" "$@"
