#!/usr/bin/env bash
# The probing stage at 1, 2 and 4 ranks gives bitwise the same tables (ranks take whole batches of
# windows; rank 0 fits the probes), on the small fixture experiment with labelled windows made from
# its token file (labels: blocks of 8 sequences, 6 classes; groups: the blocks).
# usage: probe_ranks.sh RESAE MPIEXEC OUT_DIR SRC_DIR
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4
py=/usr/bin/python3
data=$src/tests/data/pipeline
# RESAE_PIPELINE_MODEL=gemma2_model: the same experiment on the Gemma-2 model of that directory
pm=${RESAE_PIPELINE_MODEL:-model}
sfx=; [ "$pm" = model ] || sfx=_$pm
dir=$out/pipeline${sfx}_probe_ranks
rm -rf "$dir"; mkdir -p "$dir"
mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

"$py" "$src/tests/run/make_probe_windows.py" "$data/tokens.h5" "$dir/probe.h5" || fail "making the labelled windows"
# config N: its own run directory, one group of all N ranks
make_config() {
  sed -e "s#^run_dir:.*#run_dir: $dir/np$1#" -e "s#path: model#path: $data/$pm#" \
      -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" \
      -e "s#^  batch_sequences: 8#  batch_sequences: 8\n  probing: {enabled: true, data: $dir/probe.h5, n_train: 20, n_test: 8, classes_per_set: 3}#" \
      "$data/small.yaml" >"$dir/np$1.yaml"
  printf 'parallel:\n  group_size: %s\n' "$1" >>"$dir/np$1.yaml"
}
make_config 1
mpi 1 "$resae" run "$dir/np1.yaml" >"$dir/np1.log" 2>&1 || { tail -30 "$dir/np1.log"; fail "run at 1 rank"; }
ls "$dir"/np1/tasks/probe_*.h5 >/dev/null 2>&1 || fail "no probing task files at 1 rank"
for n in 2 4; do
  cp -r "$dir/np1" "$dir/np$n"
  rm -f "$dir/np$n"/tasks/probe_*.h5 "$dir/np$n/results.h5"
  make_config "$n"
  mpi "$n" "$resae" run "$dir/np$n.yaml" >"$dir/np$n.log" 2>&1 || { tail -30 "$dir/np$n.log"; fail "run at $n ranks"; }
done
"$py" - "$dir" <<'PY' || fail "probing tables differ between rank counts"
import glob, os, sys, h5py, numpy as np
d = sys.argv[1]
names = sorted(os.path.basename(p) for p in glob.glob(f"{d}/np1/tasks/probe_*.h5"))
bad = 0
for nm in names:
    with h5py.File(f"{d}/np1/tasks/{nm}", "r") as a:
        for n in (2, 4):
            with h5py.File(f"{d}/np{n}/tasks/{nm}", "r") as b:
                for t in ("probing", "probing_latents", "probing_classes"):
                    x, y = a[t][()], b[t][()]
                    if x.shape != y.shape or x.tobytes() != y.tobytes():
                        print(f"{nm} {t}: {n} ranks differ from 1 rank"); bad += 1
    with h5py.File(f"{d}/np1/tasks/{nm}", "r") as a:
        t = a["probing"][()]
        print(f"{nm}: {len(t)} rows, mean accuracy {t[:, -1].mean():.4f}")
with h5py.File(f"{d}/np4/results.h5", "r") as r:
    if "probing" not in r or len(r["probing/probing"]) == 0:
        print("results.h5 has no /probing table"); bad += 1
sys.exit(1 if bad or not names else 0)
PY
echo "probing at 1, 2, 4 ranks: identical"
