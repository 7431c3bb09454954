#!/usr/bin/env bash
# Harvest throughput against a forward-only pass over as many sequences of the same length, same
# model, same rank count (issue target: the activation store costs at most 10% of harvest time).
# usage: tests/bench/harvest_bench.sh [BUILD_DIR] [CONFIG] [RANKS] [REPEATS] [DTYPE]
#   defaults: build, configs/demo.yaml, 2, 3, the config's store.activation_dtype
#
# Each repeat runs `resae run --until harvest` into a fresh run directory, then `resae forward` over
# the first N sequences of the token file (N = the harvest's sequences; the cost of a forward pass
# does not depend on which tokens it sees). Both times exclude start-up (MPI, model load, store
# creation) and are the slowest rank's:
#   harvest: the batch loop with its last checkpoint, plus finalize (statistics, final flushes);
#   forward: the loop over its batches (tokens read, forward pass, LM head + CE, /ce written).
# The harvest stops after the last stored layer, so it skips the final layer norm, the LM head and
# the CE that the forward pass computes (about 2% of the demo model's FLOPs): the ratio slightly
# flatters the harvest. The best (fastest) of the repeats of each side is compared, since the
# machine's other work only ever slows a run down. Also printed: the harvest's own account of where
# its time went on each rank (produce = forward + capture copies; store = check/pack/convert/stats
# + writes + flush/journal; waiting = for slower ranks), and the load average before and after.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
config=${2:-$root/configs/demo.yaml}
ranks=${3:-2}
repeats=${4:-3}
dtype=${5:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_plm=isolated
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} RESAE_PROGRESS_INTERVAL=1000
work=$(mktemp -d /tmp/resae-harvest-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mpi() { mpirun -n "$ranks" --oversubscribe --bind-to none --mca btl self,vader "$@"; }
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# the resolved config (absolute paths) with the run directory moved into the scratch directory
"$build/resae" validate --no-grid "$config" | sed "s#^run_dir:.*#run_dir: $work/run#" >"$work/cfg.yaml"
[ -n "$dtype" ] && sed -i "s#^  activation_dtype:.*#  activation_dtype: $dtype#" "$work/cfg.yaml"
dtype=$(sed -n 's/^  activation_dtype: //p' "$work/cfg.yaml")
model=$(sed -n 's/^  path: //p' "$work/cfg.yaml" | head -1 | tr -d '"')
tokens=$(sed -n 's/^  tokens: //p' "$work/cfg.yaml" | head -1 | tr -d '"')

for i in $(seq 1 "$repeats"); do
  rm -rf "$work/run"
  mpi "$build/resae" run --until harvest "$work/cfg.yaml" >"$work/harvest$i.log" 2>&1 \
    || { cat "$work/harvest$i.log"; exit 1; }
  if [ "$i" = 1 ]; then
    n_seq=$(/usr/bin/python3 -c "import h5py; f=h5py.File('$work/run/activations.h5'); print(sum(len(f[s]['seq_ids']) for s in ('calib','train','eval')))")
    layers=$(/usr/bin/python3 -c "import h5py; f=h5py.File('$work/run/activations.h5'); print(sum(1 for k in f['eval'] if k.startswith('L') and '_' not in k))")
    size=$(du -sm "$work/run/activations.h5" | cut -f1)
  fi
  mpi "$build/resae" forward --model "$model" --tokens "$tokens" --out "$work/fwd.h5" --max-seqs "$n_seq" \
    >"$work/fwd$i.log" 2>&1 || { cat "$work/fwd$i.log"; exit 1; }
  [ "$i" = 1 ] && T=$(/usr/bin/python3 -c "import h5py; f=h5py.File('$work/fwd.h5'); print(f['ce'].shape[1] + 1)")
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

/usr/bin/python3 - "$work" "$repeats" "$n_seq" "$T" "$layers" "$size" "$ranks" "$dtype" "$load0" "$load1" <<'PY'
import re, sys
work, repeats, n_seq, T, layers, size, ranks, dtype, load0, load1 = sys.argv[1:]
repeats, n_seq, T, ranks = int(repeats), int(n_seq), int(T), int(ranks)
def grab(path, *pats):
    text = open(path).read()
    for pat in pats:  # the current log line, then the one of older builds (loop only, rank 0 only)
        m = re.search(pat, text)
        if m: return float(m.group(1))
    sys.exit(f"{path}: no line matching {pats}")
h, f = [], []
for i in range(1, repeats + 1):
    h.append((grab(f"{work}/harvest{i}.log", r"tok in ([0-9.]+)s including the statistics and the last flush",
                   r"harvest: \d+ tok done in ([0-9.]+)s"), i))
    f.append((grab(f"{work}/fwd{i}.log", r"tok on \d+ rank\(s\) in ([0-9.]+)s", r"forward: \d+ tok done in ([0-9.]+)s"), i))
hb, fb = min(h), min(f)
print(f"harvest: {n_seq} sequences x {T} tokens, {layers} layers stored, {dtype} ({size} MB), {ranks} ranks")
print("  harvest seconds per run: " + ", ".join(f"{t:.2f}" for t, _ in h))
print("  forward seconds per run: " + ", ".join(f"{t:.2f}" for t, _ in f))
print(f"harvest (best): {hb[0]:.2f}s = {n_seq / hb[0]:,.1f} seq/s ({n_seq * T / hb[0]:,.0f} tok/s)")
print(f"forward (best): {fb[0]:.2f}s = {n_seq / fb[0]:,.1f} seq/s ({n_seq * T / fb[0]:,.0f} tok/s), same number of sequences")
for line in open(f"{work}/harvest{hb[1]}.log"):
    if "harvest rank" in line:
        print("  " + line.split("INFO  ", 1)[1].rstrip())
ratio = fb[0] / hb[0]
print(f"load average before {load0}, after {load1}")
print(f"ratio harvest/forward at {ranks} ranks ({dtype}): {ratio:.3f} "
      f"(store cost {max(0.0, 1 - ratio) * 100:.1f}% of harvest time)")
PY
