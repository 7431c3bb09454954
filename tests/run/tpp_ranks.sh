#!/usr/bin/env bash
# The TPP stage at 1, 2 and 4 ranks gives bitwise the same tables (ranks take whole batches of test
# windows; rank 0 trains the probes and selects), on the small fixture experiment with labelled windows
# made from its token file (as pipeline_probe_ranks), plus a one-layer set. Also checks, on the tables:
#   - single-layer TPP at the probe layer equals the local (SAEBench-exact, no forward) control there,
#     up to one test window per class (the two pool the same ablation in a different order);
#   - with one layer, global = per-layer joint = single and both interactions are exactly 0;
#   - every class set's mean row is the mean of its classes' rows.
# usage: tpp_ranks.sh RESAE MPIEXEC OUT_DIR SRC_DIR
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4
py=/usr/bin/python3
data=$src/tests/data/pipeline
# RESAE_PIPELINE_MODEL=gemma2_model: the same experiment on the Gemma-2 model of that directory
pm=${RESAE_PIPELINE_MODEL:-model}
sfx=; [ "$pm" = model ] || sfx=_$pm
dir=$out/pipeline${sfx}_tpp_ranks
rm -rf "$dir"; mkdir -p "$dir"
mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

"$py" "$src/tests/run/make_probe_windows.py" "$data/tokens.h5" "$dir/probe.h5" || fail "making the labelled windows"
make_config() {
  sed -e "s#^run_dir:.*#run_dir: $dir/np$1#" -e "s#path: model#path: $data/$pm#" \
      -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" \
      -e "s#^    - {name: even, layers: \[0, 2\]}#&\n    - {name: one, layers: [2]}#" \
      -e "s#^  batch_sequences: 8#  batch_sequences: 8\n  probing: {data: $dir/probe.h5, n_train: 20, n_test: 8, classes_per_set: 3}\n  tpp: {enabled: true, budgets: [2, 5], epochs: 30}#" \
      "$data/small.yaml" >"$dir/np$1.yaml"
  printf 'parallel:\n  group_size: %s\n' "$1" >>"$dir/np$1.yaml"
}
make_config 1
mpi 1 "$resae" run "$dir/np1.yaml" >"$dir/np1.log" 2>&1 || { tail -30 "$dir/np1.log"; fail "run at 1 rank"; }
ls "$dir"/np1/tasks/tpp_*.h5 >/dev/null 2>&1 || fail "no TPP task files at 1 rank"
for n in 2 4; do
  cp -r "$dir/np1" "$dir/np$n"
  rm -f "$dir/np$n"/tasks/tpp_*.h5 "$dir/np$n/results.h5"
  make_config "$n"
  mpi "$n" "$resae" run "$dir/np$n.yaml" >"$dir/np$n.log" 2>&1 || { tail -30 "$dir/np$n.log"; fail "run at $n ranks"; }
done
"$py" - "$dir" <<'PY' || fail "TPP tables differ between rank counts or break a property"
import glob, os, sys, h5py, numpy as np
d = sys.argv[1]
names = sorted(os.path.basename(p) for p in glob.glob(f"{d}/np1/tasks/tpp_*.h5"))
bad = 0
for nm in names:
    for n in (2, 4):
        with h5py.File(f"{d}/np1/tasks/{nm}", "r") as a, h5py.File(f"{d}/np{n}/tasks/{nm}", "r") as b:
            for t in ("tpp", "tpp_latents", "tpp_probes"):
                x, y = a[t][()], b[t][()]
                if x.shape != y.shape or x.tobytes() != y.tobytes():
                    print(f"{nm} {t}: {n} ranks differ from 1 rank"); bad += 1
kinds = "single global joint global_part joint_part random local global_interaction joint_interaction".split()
K = {k: i for i, k in enumerate(kinds)}
with h5py.File(f"{d}/np4/results.h5", "r") as r:
    t = r["tpp/tpp"][()]  # set, variant, k, seed, kind, layer, N, class_set, label, intended, unintended, tpp
    sets = r["eval"].attrs["set_names"]
    sets = (sets.decode() if isinstance(sets, bytes) else sets).split(",")
    tol = 1.0 / 8 + 1e-12  # one test window of a class's 8 + 8
    n_single = n_one = 0
    for row in t[(t[:, 4] == K["single"]) & (t[:, 8] >= 0)]:
        top = max(t[(t[:, 0] == row[0]) & (t[:, 4] == K["local"]), 5])
        if row[5] != top:
            continue
        m = (t[:, 0] == row[0]) & (t[:, 1] == row[1]) & (t[:, 2] == row[2]) & (t[:, 3] == row[3]) & \
            (t[:, 4] == K["local"]) & (t[:, 5] == row[5]) & (t[:, 6] == row[6]) & (t[:, 7] == row[7]) & (t[:, 8] == row[8])
        if m.sum() != 1 or np.abs(t[m][0, 9:] - row[9:]).max() > tol:
            print("single at the probe layer != local:", row, t[m]); bad += 1
        n_single += 1
    one = sets.index("one")
    s1 = t[t[:, 0] == one]
    for row in s1[s1[:, 4] == K["single"]]:
        for kind in ("global", "joint"):
            m = (s1[:, 1] == row[1]) & (s1[:, 2] == row[2]) & (s1[:, 4] == K[kind]) & (s1[:, 6] == row[6]) & \
                (s1[:, 7] == row[7]) & (s1[:, 8] == row[8])
            if m.sum() != 1 or (s1[m][0, 9:] != row[9:]).any():
                print(f"one layer: {kind} != single:", row, s1[m]); bad += 1
        n_one += 1
    inter = s1[(s1[:, 4] == K["global_interaction"]) | (s1[:, 4] == K["joint_interaction"])]
    if len(inter) == 0 or (inter[:, 9:] != 0).any():
        print("one layer: interactions are not all exactly 0"); bad += 1
    # class-set means
    for row in t[(t[:, 7] >= 0) & (t[:, 8] == -1)]:
        m = (t[:, 7] == row[7]) & (t[:, 8] >= 0) & np.all(t[:, :7] == row[:7], axis=1)
        if np.abs(t[m][:, 9:].mean(0) - row[9:]).max() > 1e-12:
            print("class-set mean row is not the mean of its classes:", row); bad += 1
    print(f"{len(t)} TPP rows; {n_single} single-vs-local and {n_one} one-layer comparisons")
    if not n_single or not n_one:
        bad += 1
sys.exit(1 if bad or not names else 0)
PY
echo "TPP at 1, 2, 4 ranks: identical; single = local at the probe layer; one layer: global = joint = single"
