#!/usr/bin/env bash
# End-to-end tests of `resae run` on the small fixture experiment (tests/data/pipeline/small.yaml).
# usage: run_small.sh RESAE MPIEXEC OUT_DIR SRC_DIR MODE [ARG]
#   ranks N   fresh run at N ranks; the results must be complete and sane, the evaluation tables
#             must match tests/reference/eval_ref.py; a second run must find everything done and
#             change nothing
#   kill      SIGKILL every rank at random moments (4 times, restarting after each) and compare
#             the final results bitwise with an uninterrupted run at the same rank count
#   killeval  SIGKILL during the evaluation stage; the restart runs only the unfinished evaluations
#   term      SIGTERM mid-run: exit code 3 within 30 s, then the same command completes the run
#   killgrid  tests/run/kill_grid.sh on a larger grid (4 seeds, probing and TPP, 109 tasks in 2 groups): 10
#             SIGKILLs of every rank or of one rank, restarts, results identical, no finished task
#             re-run
#   lock      run.lock: a live holder is refused by name, a stale one taken over, a concurrent run refused
#   changed   a changed config re-runs only the tasks whose hash changed; results equal a fresh run
#             of the changed config; a store from other token data is refused unless --force
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4 mode=$5 arg=${6:-}
py=/usr/bin/python3
check=$src/tests/run/compare_results.py
data=$src/tests/data/pipeline
# RESAE_PIPELINE_MODEL=gemma2_model: the same experiment on the Gemma-2 model of that directory
pm=${RESAE_PIPELINE_MODEL:-model}
sfx=; [ "$pm" = model ] || sfx=_$pm
RANDOM=${RESAE_TEST_SEED:-$$}

mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }
# a copy of the config with its own run directory and absolute data paths
make_config() {
  sed -e "s#^run_dir:.*#run_dir: $2#" -e "s#path: model#path: $data/$pm#" \
      -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" "$data/small.yaml" >"$1"
}
fail() { echo "FAIL: $*"; exit 1; }

case $mode in
harvest)
  # stores from 1, 2 and 4 ranks are identical, and equal `resae forward`'s residual streams
  dir=$out/pipeline${sfx}_harvest; rm -rf "$dir"; mkdir -p "$dir"
  for n in 1 2 4; do
    make_config "$dir/np$n.yaml" "$dir/np$n"
    mpi "$n" "$resae" run --until harvest "$dir/np$n.yaml" >"$dir/np$n.log" 2>&1 || { tail -30 "$dir/np$n.log"; fail "harvest at $n ranks"; }
    grep -q "stopped after stage harvest" "$dir/np$n.log" || fail "--until harvest did not stop after the harvest"
  done
  for n in 2 4; do
    h5diff "$dir/np1/activations.h5" "$dir/np$n/activations.h5" || fail "store at $n ranks differs from 1 rank"
  done
  "$resae" forward --model "$data/$pm" --tokens "$data/tokens.h5" --out "$dir/forward.h5" --layers 0,1,2,3 \
    >"$dir/forward.log" 2>&1 || { tail "$dir/forward.log"; fail "resae forward"; }
  "$py" "$src/tests/run/check_store_vs_forward.py" "$dir/np1/activations.h5" "$dir/forward.h5" || fail "store vs forward"
  echo "harvest stores at 1, 2, 4 ranks identical and equal to resae forward"
  ;;
ranks)
  dir=$out/pipeline${sfx}_np$arg; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/small.yaml" "$dir/run"
  mpi "$arg" "$resae" run "$dir/small.yaml" >"$dir/log" 2>&1 || { tail -30 "$dir/log"; fail "run at $arg ranks"; }
  "$py" "$check" "$dir/run/results.h5" || fail "results check"
  # every evaluation at 1 rank; at 2 and 4 ranks a raw and a resae one (the reference takes ~1 s each)
  pick=(); [ "$arg" = 1 ] || pick=(--pick "$((arg - 1)),$((arg + 1))")
  "$py" "$src/tests/reference/eval_ref.py" "$dir/run" "${pick[@]}" || fail "evaluation differs from the float64 reference"
  "$resae" report "$dir/run" >"$dir/report.txt" 2>&1 || { cat "$dir/report.txt"; fail "resae report"; }
  for want in "^Reconstruction" "^Decoder redundancy" "^CE splices" "all +resae +8 +0 +so"; do
    grep -Eq "$want" "$dir/report.txt" || fail "resae report lacks '$want'"
  done
  "$resae" status "$dir/run" >"$dir/status.txt" 2>&1 || { cat "$dir/status.txt"; fail "resae status after a complete run"; }
  grep -Eq "evaluate +8 / 8 " "$dir/status.txt" || { cat "$dir/status.txt"; fail "resae status does not count 8 finished evaluations"; }
  if [ "$arg" = 1 ]; then
    # every SAE out in both formats, loaded as SAELens / sparsify load them, reproduces resae's
    # reconstructions and the eval EVs; a damaged export must be caught
    for fmt in saelens sparsify; do
      "$resae" export "$dir/run" --format $fmt --model-name small-neox "$dir/export_$fmt" >"$dir/export_$fmt.log" 2>&1 ||
        { cat "$dir/export_$fmt.log"; fail "resae export --format $fmt"; }
      "$py" "$src/tests/reference/export_ref.py" "$dir/run" "$dir/export_$fmt" || fail "the $fmt export does not reproduce resae's SAEs"
    done
    grep -q "exported 16 SAEs (SAELens format)" "$dir/export_saelens.log" || fail "SAELens export: not every SAE"
    "$resae" export "$dir/run" --format saelens --select variant=resae,k=8 "$dir/export_sel" >"$dir/export_sel.log" 2>&1 ||
      fail "resae export --select"
    [ "$(ls -d "$dir"/export_sel/resae_*_k8_s0 | wc -l)" = 4 ] && ! ls -d "$dir"/export_sel/raw_* >/dev/null 2>&1 ||
      fail "--select variant=resae,k=8 did not pick the 4 resae SAEs of k 8 (sets all and even)"
    cp -r "$dir/export_saelens" "$dir/export_bad"
    one=$(ls -d "$dir"/export_bad/resae_* | head -1)
    "$py" - "$one/sae_weights.safetensors" <<'PYEOF' || fail "damaging the export"
import json, struct, sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); (n,) = struct.unpack("<Q", b[:8])
h = json.loads(b[8:8 + n]); o = 8 + n + h["b_dec"]["data_offsets"][0]
b[o:o + 4] = struct.pack("<f", struct.unpack("<f", b[o:o + 4])[0] + 0.5); open(p, "wb").write(b)
PYEOF
    "$py" "$src/tests/reference/export_ref.py" "$dir/run" "$dir/export_bad" >"$dir/export_bad.log" 2>&1 &&
      fail "export_ref.py accepted an SAE with a changed b_dec"
    grep -q "MISMATCH" "$dir/export_bad.log" || fail "export_ref.py did not name the damaged SAE"
  fi
  cp "$dir/run/results.h5" "$dir/first.h5"
  mpi "$arg" "$resae" run "$dir/small.yaml" >"$dir/log2" 2>&1 || { tail -30 "$dir/log2"; fail "second run"; }
  grep -q "affine: .* 0 to do" "$dir/log2" || fail "second run redid affine fits"
  grep -q "train: .* 0 to do" "$dir/log2" || fail "second run retrained SAEs"
  grep -q "evaluate: .* 0 to do" "$dir/log2" || fail "second run redid evaluations"
  "$py" "$check" "$dir/first.h5" "$dir/run/results.h5" || fail "second run changed the results"
  echo "pipeline at $arg ranks: ok"
  ;;
kill)
  dir=$out/pipeline${sfx}_kill; rm -rf "$dir"; mkdir -p "$dir"
  # the uninterrupted reference reads a copy of the model and tokens elsewhere: results must not
  # depend on where the data lives
  mkdir -p "$dir/moved" && cp -r "$data/$pm" "$data/tokens.h5" "$dir/moved/"
  make_config "$dir/ref.yaml" "$dir/ref"
  sed -i -e "s#$data/$pm#$dir/moved/$pm#" -e "s#$data/tokens.h5#$dir/moved/tokens.h5#" "$dir/ref.yaml"
  grep -q "$dir/moved/$pm" "$dir/ref.yaml" || fail "could not point the reference at the moved data"
  make_config "$dir/run.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "reference run"; }
  for i in 1 2 3 4; do
    mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run$i.log" 2>&1 &
    pid=$!
    # after MPI_Init (a rank killed inside it can hang Open MPI's launcher; see kill_grid.sh)
    for _ in $(seq 1 600); do grep -q " INFO " "$dir/run$i.log" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    delay=$(( (RANDOM % 40) + 5 ))      # 0.5 .. 4.4 s
    sleep "$((delay / 10)).$((delay % 10))"
    pkill -KILL -f "^$resae run $dir/run.yaml" 2>/dev/null
    wait $pid; rc=$?
    echo "kill $i after ${delay}00 ms: exit $rc, $(ls "$dir/run/tasks" 2>/dev/null | grep -c '\.h5$') task files"
  done
  mpi 2 "$resae" run "$dir/run.yaml" >"$dir/final.log" 2>&1 || { tail -30 "$dir/final.log"; fail "final run"; }
  ls "$dir/run/tasks" | grep -q '\.tmp$' && fail "a temporary task file was left behind"
  "$py" "$check" "$dir/ref/results.h5" "$dir/run/results.h5" || fail "killed and restarted results differ"
  echo "killed 4 times and restarted: results identical to the uninterrupted run (on moved data)"
  ;;
killeval)
  # SIGKILL inside the evaluation stage: the restart keeps the finished evaluation task files, runs
  # only the others, and the results equal an uninterrupted run's
  dir=$out/pipeline${sfx}_killeval; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/ref.yaml" "$dir/ref"
  make_config "$dir/run.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "reference run"; }
  mpi 2 "$resae" run --until train "$dir/run.yaml" >"$dir/train.log" 2>&1 || { tail -30 "$dir/train.log"; fail "run --until train"; }
  mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do grep -q "INFO  eval " "$dir/run1.log" && break; sleep 0.05; done
  # resae status while the run goes: alive, and the tasks running now are counted
  "$resae" status "$dir/run" >"$dir/status_live.txt" 2>&1
  pkill -KILL -f "^$resae run $dir/run.yaml" 2>/dev/null
  wait $pid
  grep -q "^last run: running; pid" "$dir/status_live.txt" || { cat "$dir/status_live.txt"; fail "resae status does not see the live run"; }
  grep -Eq "^  (evaluate|ablate) .* running [1-9]" "$dir/status_live.txt" || { cat "$dir/status_live.txt"; fail "resae status shows no running evaluation"; }
  # the killed ranks may take a moment to be reaped
  for _ in $(seq 1 50); do
    "$resae" status "$dir/run" >"$dir/status_killed.txt" 2>&1
    grep -q "^last run: killed or lost" "$dir/status_killed.txt" && break
    sleep 0.1
  done
  grep -q "^last run: killed or lost" "$dir/status_killed.txt" || { cat "$dir/status_killed.txt"; fail "resae status does not see that the run was killed"; }
  grep -Eq "^  (evaluate|ablate) .* [1-9] interrupted" "$dir/status_killed.txt" || { cat "$dir/status_killed.txt"; fail "resae status does not count the interrupted tasks"; }
  grep -q "^state: incomplete" "$dir/status_killed.txt" || fail "resae status calls a killed run complete"
  n=$(ls "$dir/run/tasks" | grep -c '^eval_.*\.h5$')
  echo "killed during evaluation with $n of 8 evaluation task files"
  [ "$n" -lt 8 ] || fail "the kill came after the evaluation stage"
  mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run2.log" 2>&1 || { tail -30 "$dir/run2.log"; fail "restart"; }
  grep -q "evaluate: 8 evaluations (8 unique), $((8 - n)) to do" "$dir/run2.log" || fail "the restart did not resume at the next evaluation"
  ls "$dir/run/tasks" | grep -q '\.tmp$' && fail "a temporary task file was left behind"
  "$py" "$check" "$dir/ref/results.h5" "$dir/run/results.h5" || fail "results after the restart differ"
  echo "killed in evaluation and restarted: results identical"
  ;;
term)
  dir=$out/pipeline${sfx}_term; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/ref.yaml" "$dir/ref"
  make_config "$dir/run.yaml" "$dir/run"
  # one group of 2 ranks (tasks one after another) and a larger grid (4 seeds, batch 256: 64 SAEs of
  # 44 steps), so that a signal always lands while work is left
  for f in ref run; do
    printf 'parallel:\n  group_size: 2\n' >>"$dir/$f.yaml"
    sed -i -e 's/^  seeds: \[0\]/  seeds: [0, 1, 2, 3]/' -e 's/^  batch_size: 1024/  batch_size: 256/' "$dir/$f.yaml"
    grep -q 'seeds: \[0, 1, 2, 3\]' "$dir/$f.yaml" && grep -q 'batch_size: 256' "$dir/$f.yaml" || fail "config edit"
  done
  mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "reference run"; }
  # 1: SIGTERM to every rank (as srun delivers it); 2: SIGUSR1 to mpirun, which forwards it
  for i in 1 2; do
    mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run$i.log" 2>&1 &
    pid=$!
    # signal once this attempt has certainly started working (its ranks have their handlers) and
    # work is left: 1 once an SAE has checkpointed, 2 once this attempt has finished a task
    ntasks() { ls "$dir/run/tasks" 2>/dev/null | grep -c '\.h5$'; }
    before=$(ntasks)
    for _ in $(seq 1 600); do
      if [ $i = 1 ]; then ls "$dir/run/ckpt" 2>/dev/null | grep -q '\.ckpt$' && break
      else [ "$(ntasks)" -gt "$before" ] && break; fi
      kill -0 $pid 2>/dev/null || break
      sleep 0.05
    done
    t0=$(date +%s)
    if [ $i = 1 ]; then pkill -TERM -f "^$resae run $dir/run.yaml"; sig=TERM
    else pkill -USR1 -f "^$mpiexec .*$resae run $dir/run.yaml"; sig=USR1; fi
    wait $pid; rc=$?
    took=$(( $(date +%s) - t0 ))
    echo "SIG$sig: exit $rc after ${took}s"
    [ $rc = 3 ] || { tail -20 "$dir/run$i.log"; fail "SIG$sig should exit with code 3, got $rc"; }
    [ $took -le 30 ] || fail "SIG$sig took ${took}s to stop (limit 30 s)"
    grep -q "interrupted: state is checkpointed" "$dir/run$i.log" || fail "no checkpoint message"
  done
  mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run3.log" 2>&1 || { tail -30 "$dir/run3.log"; fail "resumed run"; }
  "$py" "$check" "$dir/ref/results.h5" "$dir/run/results.h5" || fail "resumed results differ"
  echo "SIGTERM: exit 3, resumed, results identical"
  ;;
groups)
  # N ranks in groups of GS: tasks run on every group (rank 0's too, by the task table); two runs
  # are bitwise equal; a run with one group of N agrees within 1e-4 (reductions differ)
  n=$arg gs=${7:?groups needs N and GS}
  dir=$out/pipeline${sfx}_groups_np${n}_gs$gs; rm -rf "$dir"; mkdir -p "$dir"
  for r in a b one; do
    make_config "$dir/$r.yaml" "$dir/$r"
    g=$gs; [ $r = one ] && g=$n
    printf 'parallel:\n  group_size: %s\n' "$g" >>"$dir/$r.yaml"
    mpi "$n" "$resae" run "$dir/$r.yaml" >"$dir/$r.log" 2>&1 || { tail -30 "$dir/$r.log"; fail "run $r at $n ranks, groups of $g"; }
  done
  for r in a b; do
    "$py" - "$dir/$r/results.h5" "$n" "$gs" <<'PYEOF' || fail "task table of run $r"
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
n, gs = int(sys.argv[2]), int(sys.argv[3])
t = f["tasks"][:]
st = [s.decode() for s in t["state"]]
assert all(s == "done" for s in st), st
assert f["tasks"].attrs["group_size"] == gs and f["tasks"].attrs["n_groups"] == n // gs
world = t["group"] == -1
assert world.sum() == 1 and t["group_size"][world][0] == n, "the harvest runs on the world"
groups = set(int(g) for g in t["group"][~world])
assert groups == set(range(n // gs)), f"tasks ran on groups {groups}, want all of 0..{n // gs - 1}"
assert np.all(t["group_size"][~world] == gs)
kinds = set(int(k) for k in t["kind"])
assert kinds == {0, 1, 2, 3, 4}, kinds  # harvest, affine, train, evaluate, ablate
print(f"task table: {len(t)} tasks on groups {sorted(groups)} of {gs} ranks")
PYEOF
  done
  "$py" "$check" "$dir/a/results.h5" "$dir/b/results.h5" || fail "two runs in groups of $gs differ"
  "$py" "$check" "$dir/a/results.h5" "$dir/one/results.h5" --tol 1e-4 || fail "groups of $gs vs one group beyond 1e-4"
  echo "groups of $gs at $n ranks: tasks on every group, repeatable, equal to one group within 1e-4"
  ;;
killgrid)
  dir=$out/pipeline${sfx}_killgrid; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/grid.yaml" "$dir/unused"
  printf 'parallel:\n  group_size: 1\n' >>"$dir/grid.yaml"
  sed -i -e 's/^  seeds: \[0\]/  seeds: [0, 1, 2, 3]/' -e 's/^  batch_size: 1024/  batch_size: 256/' "$dir/grid.yaml"
  grep -q 'seeds: \[0, 1, 2, 3\]' "$dir/grid.yaml" && grep -q 'batch_size: 256' "$dir/grid.yaml" || fail "config edit"
  # the probing and TPP tasks too: labelled windows from the token file (as tests/run/probe_ranks.sh)
  "$py" "$src/tests/run/make_probe_windows.py" "$data/tokens.h5" "$dir/probe.h5" || fail "making the labelled windows"
  sed -i "s#^  batch_sequences: 8#  batch_sequences: 8\n  probing: {enabled: true, data: $dir/probe.h5, n_train: 20, n_test: 8, classes_per_set: 3}\n  tpp: {enabled: true, budgets: [3], class_sets: 1}#" "$dir/grid.yaml"
  grep -q 'tpp: {enabled: true' "$dir/grid.yaml" || fail "config edit (tpp)"
  RESAE_KILL_DMIN=0.5 bash "$src/tests/run/kill_grid.sh" "$resae" "$dir/grid.yaml" 10 2 "$dir/kill" "$mpiexec"
  ;;
changed)
  dir=$out/pipeline${sfx}_changed; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/a.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/a.yaml" >"$dir/a.log" 2>&1 || { tail -30 "$dir/a.log"; fail "run of config A"; }
  (cd "$dir/run/tasks" && sha256sum ./*.h5) >"$dir/a.sums"
  # B: one more k. Only its 8 SAEs (raw and resae, 4 layers) and 4 evaluations are new
  sed 's/^  k: \[4, 8\]/  k: [4, 8, 12]/' "$dir/a.yaml" >"$dir/b.yaml"
  grep -q 'k: \[4, 8, 12\]' "$dir/b.yaml" || fail "config edit"
  mpi 2 "$resae" run "$dir/b.yaml" >"$dir/b.log" 2>&1 || { tail -30 "$dir/b.log"; fail "run of config B on A's run directory"; }
  grep -q "affine: .* 0 to do" "$dir/b.log" || fail "config B redid affine fits"
  grep -q "train: 24 SAEs (12 raw, 12 resae), 8 to do" "$dir/b.log" || fail "config B should train only the 8 new SAEs"
  grep -q "evaluate: 12 evaluations (12 unique), 4 to do" "$dir/b.log" || fail "config B should run only the 4 new evaluations"
  (cd "$dir/run/tasks" && sha256sum -c --quiet "$dir/a.sums") || fail "config B rewrote task files of config A"
  make_config "$dir/bfresh.yaml" "$dir/bfresh"
  sed -i 's/^  k: \[4, 8\]/  k: [4, 8, 12]/' "$dir/bfresh.yaml"
  mpi 2 "$resae" run "$dir/bfresh.yaml" >"$dir/bfresh.log" 2>&1 || { tail -30 "$dir/bfresh.log"; fail "fresh run of config B"; }
  "$py" "$check" "$dir/bfresh/results.h5" "$dir/run/results.h5" || fail "A then B differs from a fresh run of B"
  # C: other eval split sizes: the activation store is for other data: refused at once, nothing changed
  sed 's/eval: 3000}/eval: 2500}/' "$dir/b.yaml" >"$dir/c.yaml"
  grep -q 'eval: 2500}' "$dir/c.yaml" || fail "config edit"
  store_sum=$(sha256sum <"$dir/run/activations.h5")
  mpi 2 "$resae" run "$dir/c.yaml" >"$dir/c.log" 2>&1 && fail "config C ran on a store harvested for other splits"
  grep -q "was harvested for a different run: budget_eval is 3000 in the store but 2500 in this run.*--force" "$dir/c.log" ||
    { tail -5 "$dir/c.log"; fail "config C: no clear refusal naming the field and --force"; }
  grep -q "harvest (1 attempts" "$dir/c.log" || fail "the refusal was retried"
  [ "$(sha256sum <"$dir/run/activations.h5")" = "$store_sum" ] || fail "the refused run changed the activation store"
  "$resae" status "$dir/run" >"$dir/c.status" 2>&1
  grep -q "failed harvest: .*harvested for a different run" "$dir/c.status" || { cat "$dir/c.status"; fail "resae status does not show the failed harvest"; }
  mpi 2 "$resae" run --force "$dir/c.yaml" >"$dir/cforce.log" 2>&1 || { tail -30 "$dir/cforce.log"; fail "config C with --force"; }
  make_config "$dir/cfresh.yaml" "$dir/cfresh"
  sed -i -e 's/^  k: \[4, 8\]/  k: [4, 8, 12]/' -e 's/eval: 3000}/eval: 2500}/' "$dir/cfresh.yaml"
  mpi 2 "$resae" run "$dir/cfresh.yaml" >"$dir/cfresh.log" 2>&1 || { tail -30 "$dir/cfresh.log"; fail "fresh run of config C"; }
  "$py" "$check" "$dir/cfresh/results.h5" "$dir/run/results.h5" || fail "C with --force differs from a fresh run of C"
  echo "changed config: only new tasks ran, results equal fresh runs, other data refused unless --force"
  ;;
memplan)
  # the memory plan: resae validate prints and writes it; resae run refuses, before any work, a node
  # that cannot hold it, naming the stage and the setting
  dir=$out/pipeline${sfx}_memplan; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/c.yaml" "$dir/run"
  RESAE_NODE_MEMORY=64G "$resae" validate --ranks-per-node 4 --plan-json "$dir/plan.json" "$dir/c.yaml" \
    >"$dir/validate.txt" 2>&1 || { cat "$dir/validate.txt"; fail "validate"; }
  grep -q '^# memory plan for 4 rank(s) per node (resae validate --ranks-per-node R), node memory 68.72 GB (RESAE_NODE_MEMORY)' \
    "$dir/validate.txt" || fail "the plan's heading"
  for st in harvest affine train evaluate; do
    grep -qE "^#   $st +[0-9.]+ [MG]B" "$dir/validate.txt" || fail "no plan line for stage $st"
  done
  grep -q -- '-- fits$' "$dir/validate.txt" || fail "64 GB should hold the small experiment"
  "$py" - "$dir/plan.json" <<'PY' || fail "plan.json"
import json, sys
p = json.load(open(sys.argv[1]))
st = p["stages"]
assert set(st) >= {"harvest", "affine", "train", "evaluate"}, st
assert p["ranks_per_node"] == 4 and p["node_bytes"] == 64 * 2**30, p
for name, s in st.items():
    assert abs(s["node"] - (4 * s["rank"] + s["shared"])) <= 2, (name, s)
    assert s["rank"] >= 64 * 2**20, (name, s)  # at least the process baseline
top = max(s["rank"] for s in st.values())
assert abs(p["node_private"] - 4 * top) <= 4, p
assert st["harvest"]["shared"] == 0 or st["evaluate"]["shared"] >= st["harvest"]["shared"], st
print("plan.json consistent")
PY
  RESAE_NODE_MEMORY=1M "$resae" validate "$dir/c.yaml" >"$dir/small_node.txt" 2>&1 || fail "validate with a small node"
  grep -q -- '-- DOES NOT FIT: resae run refuses it' "$dir/small_node.txt" || fail "1 MB should not hold it"
  RESAE_NODE_MEMORY=lots "$resae" validate "$dir/c.yaml" >"$dir/bad_env.txt" 2>&1 || fail "validate with a bad RESAE_NODE_MEMORY"
  grep -q "warning: RESAE_NODE_MEMORY='lots' is not a size" "$dir/bad_env.txt" || fail "no warning for RESAE_NODE_MEMORY=lots"
  # the cost model: rates from a file, core-hours = FLOP / rate, wall time over nodes x cores
  printf 'harvest: 50\naffine: 10\ntrain: 100\nevaluate: 25\n' >"$dir/rates.yaml"
  "$resae" validate --rates "$dir/rates.yaml" --nodes 2 --cores 4 "$dir/c.yaml" >"$dir/cost.txt" 2>&1 || fail "validate --rates"
  "$py" - "$dir/cost.txt" <<'PY' || fail "the cost model's arithmetic"
import re, sys
t = open(sys.argv[1]).read()
rows = re.findall(r"^#   (harvest|affine|training|evaluation) +([0-9.e+]+) FLOP at +([0-9.]+) GFLOP/s per core +([0-9.]+) core-hours", t, re.M)
assert [r[0] for r in rows] == ["harvest", "affine", "training", "evaluation"], rows
want = {"harvest": 50, "affine": 10, "training": 100, "evaluation": 25}
tot = 0
for name, flop, rate, ch in rows:
    assert float(rate) == want[name], (name, rate)
    h = float(flop) / (want[name] * 1e9) / 3600
    assert abs(float(ch) - h) <= 0.05 + 1e-3 * h, (name, ch, h)
    tot += h
m = re.search(r"total ([0-9.]+) core-hours; on 2 node\(s\) x 4 cores: about ([0-9.]+) hours", t)
assert m and abs(float(m.group(1)) - tot) <= 0.1, (m and m.group(1), tot)
assert float(m.group(2)) >= tot / 8 - 0.05, m.group(2)
print("cost model consistent")
PY
  printf 'harvest: 50\ntrain: fast\n' >"$dir/bad_rates.yaml"
  "$resae" validate --rates "$dir/bad_rates.yaml" "$dir/c.yaml" >"$dir/bad_rates.txt" 2>&1 && fail "a bad rates file was accepted"
  grep -q "bad_rates.yaml:2: train: expected a positive number of GFLOP/s per core" "$dir/bad_rates.txt" ||
    { cat "$dir/bad_rates.txt"; fail "the bad rates file's error does not name the line and key"; }
  # a node of 100 MiB cannot run 2 ranks of more than 52 MB each: refused at start, nothing written
  RESAE_NODE_MEMORY=100M mpi 2 "$resae" run "$dir/c.yaml" >"$dir/refused.log" 2>&1; rc=$?
  [ $rc = 1 ] || { cat "$dir/refused.log"; fail "exit $rc, expected 1 for a node too small"; }
  grep -qE "c.yaml: stage [a-z]+ needs [0-9]+ MB per rank; 2 ranks per node need [0-9]+ MB, more than the node's 105 MB \(RESAE_NODE_MEMORY\)\. Lower [a-z._]+" \
    "$dir/refused.log" || { cat "$dir/refused.log"; fail "the refusal does not name the stage, the sizes and the setting"; }
  [ ! -e "$dir/run/activations.h5" ] || fail "a refused run wrote the store"
  # the same run with the memory it needs goes through
  RESAE_NODE_MEMORY=64G mpi 2 "$resae" run --until harvest "$dir/c.yaml" >"$dir/ok.log" 2>&1 || { tail "$dir/ok.log"; fail "run with 64 GB"; }
  grep -q "memory plan: 2 rank(s) per node; the largest stage per rank is" "$dir/ok.log" || fail "no memory plan line in the log"
  echo "memory plan printed, written, checked at start; a node too small refused before any work"
  ;;
lock)
  # one run per run directory: a live holder (another resae run, or a process holding run.lock) is
  # refused by name before anything is written; a lock left by a killed run elsewhere is taken over
  dir=$out/pipeline${sfx}_lock; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/small.yaml" "$dir/run"
  mkdir -p "$dir/run"
  "$py" - "$dir/run/run.lock" "$dir/held" <<'PYEOF' &
import fcntl, os, sys, time
f = open(sys.argv[1], "w"); fcntl.flock(f, fcntl.LOCK_EX)
f.write("pid 4242 on host node-17, started 2026-01-01 00:00:00 UTC, Slurm job 99\n"); f.flush()
open(sys.argv[2], "w").close()
while os.path.exists(sys.argv[2]): time.sleep(0.05)
PYEOF
  holder=$!
  for _ in $(seq 1 200); do [ -e "$dir/held" ] && break; sleep 0.05; done
  mpi 2 "$resae" run --until harvest "$dir/small.yaml" >"$dir/held.log" 2>&1 && fail "a run started while run.lock was held"
  grep -q "another resae run is using this run directory (pid 4242 on host node-17" "$dir/held.log" ||
    { tail -5 "$dir/held.log"; fail "the refusal does not name the holder"; }
  [ -e "$dir/run/config.yaml" ] && fail "the refused run wrote config.yaml"
  rm -f "$dir/held"; wait $holder
  # the holder is gone (as after a SIGKILL on another host): its line stays, the lock is free
  grep -q "node-17" "$dir/run/run.lock" || fail "test setup: the dead holder's line is gone"
  mpi 2 "$resae" run --until harvest "$dir/small.yaml" >"$dir/stale.log" 2>&1 || { tail -20 "$dir/stale.log"; fail "run after a stale lock"; }
  grep -q "run lock: taking over .*pid 4242 on host node-17" "$dir/stale.log" || fail "the takeover of a stale lock is not reported"
  [ -s "$dir/run/run.lock" ] && fail "a finished run left its line in run.lock"
  # two real runs at once: the second is refused, naming the first's rank 0 and host; the first finishes.
  # A longer grid (4 seeds, batch 256, as in `term`) so that the first is still going when the second starts
  sed -i -e 's/^  seeds: \[0\]/  seeds: [0, 1, 2, 3]/' -e 's/^  batch_size: 1024/  batch_size: 256/' "$dir/small.yaml"
  grep -q 'seeds: \[0, 1, 2, 3\]' "$dir/small.yaml" || fail "config edit"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/first.log" 2>&1 &
  first=$!
  for _ in $(seq 1 600); do grep -q "pid .* on host" "$dir/run/run.lock" 2>/dev/null && break; sleep 0.05; done
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/second.log" 2>&1 && fail "a second run on the same run directory started"
  grep -q "another resae run is using this run directory (pid [0-9]* on host $(hostname)" "$dir/second.log" ||
    { tail -5 "$dir/second.log"; fail "the second run's refusal does not name the first"; }
  wait $first || { tail -20 "$dir/first.log"; fail "the first run failed"; }
  grep -q "INFO  stages run: harvest" "$dir/first.log" || fail "the first run did not finish its stages"
  "$py" "$check" "$dir/run/results.h5" || fail "results of the first run"
  # results.h5 is only ever written from the task files: truncated or deleted, the next run rebuilds it
  cp "$dir/run/results.h5" "$dir/full.h5"
  truncate -s 4096 "$dir/run/results.h5"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/rebuild1.log" 2>&1 || { tail -20 "$dir/rebuild1.log"; fail "run after truncating results.h5"; }
  "$py" "$check" "$dir/full.h5" "$dir/run/results.h5" || fail "results.h5 rebuilt after truncation differs"
  rm "$dir/run/results.h5"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/rebuild2.log" 2>&1 || { tail -20 "$dir/rebuild2.log"; fail "run after deleting results.h5"; }
  grep -q "train: .* 0 to do" "$dir/rebuild2.log" || fail "deleting results.h5 made the run retrain"
  "$py" "$check" "$dir/full.h5" "$dir/run/results.h5" || fail "results.h5 rebuilt after deletion differs"
  echo "run lock: held lock refused by name, stale lock taken over, concurrent run refused; results.h5 rebuilt"
  ;;
corrupt)
  # flipped bits and truncated tails: damaged task files are found by their checksums when the run
  # starts, moved aside and redone (damaged checkpoints: test_sae_ckpt); a damaged activation store row is refused by name when read, and after the store is deleted the
  # same command finishes. Every time the results equal the undamaged run's.
  dmg=$src/tests/run/damage.py
  dir=$out/pipeline${sfx}_corrupt; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/small.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/first.log" 2>&1 || { tail -20 "$dir/first.log"; fail "first run"; }
  cp "$dir/run/results.h5" "$dir/full.h5"
  t=$dir/run/tasks
  one() { ls "$t"/$1_*.h5 | head -1; }
  "$py" "$dmg" data "$(one sae_raw_L1_k4_s0)" W_dec || fail "damaging an SAE task file"
  "$py" "$dmg" data "$(one eval_all_raw_k4_s0)" ce || fail "damaging an evaluation task file"
  "$py" "$dmg" header "$(one eval_even_resae_k8_s0)" recon || fail "damaging an object header"
  "$py" "$dmg" truncate "$(one affine_L0_L1)" || fail "truncating an affine task file"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/again.log" 2>&1 || { tail -20 "$dir/again.log"; fail "the run after damaging 4 task files"; }
  n=$(grep -c "WARN  task file .* is damaged (.*): moved to .*\.damaged; the task runs again" "$dir/again.log")
  grep "is damaged" "$dir/again.log" | head -4 | cut -c1-260
  [ "$n" = 4 ] || fail "$n damaged task files reported, expected 4"
  for k in "sae raw_L1_k4_s0" "eval all_raw_k4_s0" "eval even_resae_k8_s0" "affine L0_L1"; do
    grep -q "task $k: done" "$dir/again.log" || fail "task $k did not run again"
  done
  # the harvest always runs (it finds the store complete); the 4 damaged tasks; nothing else
  grep -qE "scheduler: [0-9]+ tasks, [0-9]+ done before, 5 to run" "$dir/again.log" ||
    fail "other tasks than the harvest and the 4 damaged ones ran again"
  grep -m1 "scheduler: .* to run" "$dir/again.log" | cut -c24-200
  "$py" "$check" "$dir/full.h5" "$dir/run/results.h5" || fail "results after redoing the damaged task files differ"
  # the store: one bit flipped in every chunk of layer 1's rows; its readers refuse it by name
  for s in train calib eval; do "$py" "$dmg" data "$dir/run/activations.h5" "$s/L1" --every >/dev/null || fail "damaging the store"; done
  rm -f "$t"/sae_*L1_* "$t"/affine_* "$t"/eval_* "$dir/run/results.h5"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/store.log" 2>&1 && fail "a run on a damaged activation store finished"
  grep -E "^error: |ERROR" "$dir/store.log" | grep -m1 "does not match its checksum" | cut -c1-400
  grep -qE "activations.h5: row [0-9]+ of /[a-z]+/L1 does not match its checksum: the activation store is damaged on disk. Delete it" "$dir/store.log" ||
    { tail -20 "$dir/store.log"; fail "the damaged store row was not reported by name"; }
  grep -q "retrying" "$dir/store.log" && fail "a task on a damaged store was retried"
  # ... and a store with a truncated tail is refused when the run starts
  "$py" "$dmg" truncate "$dir/run/activations.h5" >/dev/null || fail "truncating the store"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/store_cut.log" 2>&1 && fail "a run on a truncated activation store finished"
  grep -q "activations.h5 cannot be opened although the harvest journal records finished batches: the file is damaged (a truncated or overwritten file). Delete it and run the same command again" "$dir/store_cut.log" ||
    { tail -20 "$dir/store_cut.log"; fail "the truncated store was not refused by name with the fix"; }
  rm "$dir/run/activations.h5"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/rebuilt.log" 2>&1 || { tail -20 "$dir/rebuilt.log"; fail "the run after deleting the damaged store"; }
  "$py" "$check" "$dir/full.h5" "$dir/run/results.h5" || fail "results after harvesting again differ"
  echo "damaged files: 4 task files redone, a damaged or truncated store refused by name and rebuilt; results identical"
  ;;
diverge)
  # an SAE whose training diverges (train.lr far too high) stops its task at once with an error naming
  # the SAE, the step and the setting, is not retried, and no SAE or result of it is written
  dir=$out/pipeline${sfx}_diverge; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/small.yaml" "$dir/run"
  sed -i 's/^  warmup_steps: 2/  warmup_steps: 0\n  lr: 10/' "$dir/small.yaml"
  grep -q "^  lr: 10" "$dir/small.yaml" || fail "could not set train.lr in the config copy"
  mpi 2 "$resae" run "$dir/small.yaml" >"$dir/run.log" 2>&1 && fail "a run with train.lr = 10 finished"
  grep -E "ERROR +task sae [a-z]+_L[0-9]+_k[0-9]+_s0: failed after 1 attempt\(s\) \(not retried: the same inputs fail the same way\): .*SAE training diverged at step [0-9]+ of [0-9]+: the batch FVU is .*above train.max_fvu = 100.*Lower train.lr \(now 10\)" \
    "$dir/run.log" | head -1 | cut -c1-400
  grep -qE "task sae .*not retried: the same inputs fail the same way.*SAE training diverged at step" "$dir/run.log" ||
    { tail -20 "$dir/run.log"; fail "no error naming the diverged SAE, its step and train.lr"; }
  grep -q "retrying" "$dir/run.log" && fail "a diverging SAE was retried"
  find "$dir/run/tasks" -name 'sae_*.h5' 2>/dev/null | grep -q . && fail "an SAE task file was written: $(find "$dir/run/tasks" -name 'sae_*.h5' | head -1)"
  echo "diverging SAEs: stopped with the step and the setting, not retried, nothing written"
  ;;
*) fail "unknown mode $mode" ;;
esac
