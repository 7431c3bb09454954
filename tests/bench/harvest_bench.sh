#!/usr/bin/env bash
# Harvest throughput against a forward-only pass over the same number of sequences, same model,
# same rank count (issue target: the activation store costs at most 10% of harvest time).
# usage: tests/bench/harvest_bench.sh [BUILD_DIR] [CONFIG] [RANKS]
#   defaults: build, configs/demo.yaml, 2
# Prints both rates and the ratio harvest/forward (1.0 = the store is free).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
config=${2:-$root/configs/demo.yaml}
ranks=${3:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_plm=isolated
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} RESAE_PROGRESS_INTERVAL=1000
work=$(mktemp -d /tmp/resae-harvest-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi() { mpirun -n "$ranks" --oversubscribe --bind-to none --mca btl self,vader "$@"; }

# the resolved config (absolute paths) with the run directory moved into the scratch directory
"$build/resae" validate --no-grid "$config" | sed "s#^run_dir:.*#run_dir: $work/run#" >"$work/cfg.yaml"
model=$(sed -n 's/^  path: //p' "$work/cfg.yaml" | head -1 | tr -d '"')
tokens=$(sed -n 's/^  tokens: //p' "$work/cfg.yaml" | head -1 | tr -d '"')

mpi "$build/resae" run --until harvest "$work/cfg.yaml" >"$work/harvest.log" 2>&1
h_line=$(grep -E "harvest: [0-9]+ tok done in" "$work/harvest.log" | tail -1)
h_tok=$(sed -E 's/.*harvest: ([0-9]+) tok done in ([0-9.]+)s.*/\1/' <<<"$h_line")
h_sec=$(sed -E 's/.*harvest: ([0-9]+) tok done in ([0-9.]+)s.*/\2/' <<<"$h_line")
n_seq=$(/usr/bin/python3 -c "import h5py; f=h5py.File('$work/run/activations.h5'); print(sum(len(f[s]['seq_ids']) for s in ('calib','train','eval')))")
layers=$(/usr/bin/python3 -c "import h5py; f=h5py.File('$work/run/activations.h5'); print(sum(1 for k in f['eval'] if k.startswith('L') and '_' not in k))")
size=$(du -sm "$work/run/activations.h5" | cut -f1)

mpi "$build/resae" forward --model "$model" --tokens "$tokens" --out "$work/fwd.h5" --max-seqs "$n_seq" >"$work/fwd.log" 2>&1
f_line=$(grep -E "forward: [0-9]+ tok done in" "$work/fwd.log" | tail -1)
f_rate=$(sed -E 's/.*\(([0-9.]+) tok\/s\).*/\1/' <<<"$f_line")
h_rate=$(sed -E 's/.*\(([0-9.]+) tok\/s\).*/\1/' <<<"$h_line")
T=$(/usr/bin/python3 -c "import h5py; f=h5py.File('$work/fwd.h5'); print(f['ce'].shape[1] + 1)")

/usr/bin/python3 - "$h_tok" "$h_sec" "$h_rate" "$n_seq" "$T" "$f_rate" "$layers" "$size" "$ranks" <<'PY'
import sys
h_tok, h_sec, h_rate, n_seq, T, f_rate, layers, size, ranks = sys.argv[1:]
h_tok, h_sec, h_rate, n_seq, T, f_rate, ranks = int(h_tok), float(h_sec), float(h_rate), int(n_seq), int(T), float(f_rate), int(ranks)
# compare sequences per second of the loops (model load and MPI start-up excluded on both sides):
# harvest's rate counts stored rows (all ranks); forward's counts rank 0's tokens (ranks balanced)
h_seq = h_rate / (h_tok / n_seq)
f_seq = ranks * f_rate / T
print(f"harvest: {n_seq} sequences x {T} tokens, {layers} layers stored ({size} MB): {h_seq:,.1f} seq/s ({h_seq * T:,.0f} tok/s)")
print(f"forward: the same sequences, CE only: {f_seq:,.1f} seq/s ({f_seq * T:,.0f} tok/s)")
print(f"ratio harvest/forward at {ranks} ranks: {h_seq / f_seq:.3f} (store cost {max(0.0, 1 - h_seq / f_seq) * 100:.1f}% of harvest time)")
PY
