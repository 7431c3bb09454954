#!/bin/bash
# jobs/slurm/resae.sbatch under a real Slurm cluster (tests/slurm/cluster.sh: munged, slurmctld and
# slurmd of this test's own), on the small fixture experiment (tests/data/pipeline/small.yaml):
#   defaults   a job submitted with none of --nodes/--ntasks/--time starts (it fits the partition),
#              runs one rank per CPU and completes
#   srun       --time=1 --signal=B:USR1@60: the time limit's SIGUSR1 arrives during the harvest, during
#   mpirun     SAE training and during evaluation in three successive allocations (RESAE_TEST_HOLD,
#              util.h, keeps each allocation in its stage until the signal); the job requeues itself
#              3 times and completes; results bitwise equal to an uninterrupted run, no finished task
#              redone. The srun job leaves RESAE_LAUNCHER unset (auto: srun --mpi=pmix), the mpirun
#              job sets it and is submitted without the OMPI_ALLOW_RUN_AS_ROOT variables
#   scancel    `resae status` from this shell while the job runs names the job; scancel: checkpointed,
#              not requeued; the same submission again resumes and completes, results equal
#   broken     a config that cannot load: the job fails at once, is not requeued, and its output
#              names the file and the field
#   cap        RESAE_MAX_REQUEUES=1: after one requeue the job stops requeueing and says so
# usage: slurm_jobs.sh RESAE SRC_DIR OUT_DIR MPIEXEC
# Exits 77 (skipped) with the reason where no cluster can be started (not root, no apt-get).
set -uo pipefail
resae=$1 src=$2 out=$3 mpiexec=$4
py=/usr/bin/python3
data=$src/tests/data/pipeline
cluster=$src/tests/slurm/cluster.sh
script=$src/jobs/slurm/resae.sbatch
t0=$(date +%s)

bash "$cluster" check || exit 77
dir=$out/slurm
# a cluster left by an earlier, killed run of this test
[ -d "$dir/cluster" ] && bash "$cluster" down "$dir/cluster" >/dev/null 2>&1
rm -rf "$dir"; mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cdir=$dir/cluster
trap 'bash "$cluster" down "$cdir"' EXIT
bash "$cluster" up "$cdir" || { echo "FAIL: the Slurm cluster did not start"; exit 1; }
# shellcheck disable=SC1091
source "$cdir/env.sh"

fail() {
  echo "FAIL: $*"
  for f in "$dir"/*.out; do [ -f "$f" ] && { echo "---- $f (last 40 lines)"; tail -40 "$f"; }; done
  echo "---- slurmctld.log (last 20 lines)"; tail -20 "$cdir/log/slurmctld.log"
  exit 1
}
el() { echo $(($(date +%s) - $1)); }
make_config() { # NAME: a copy of small.yaml with its own run directory and absolute data paths
  sed -e "s#^run_dir:.*#run_dir: $dir/$1#" -e "s#path: model#path: $data/model#" \
    -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" "$data/small.yaml" >"$dir/$1.yaml"
}
# submit NAME [sbatch options]: prints the job id; the submission environment is this shell's
submit() {
  local name=$1
  shift
  sbatch --parsable --chdir="$dir" --job-name="$name" --output="$dir/$name.out" "$@" "$script" "$dir/$name.yaml" ||
    fail "sbatch of $name"
}
job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# wait_gone JOB SECONDS: until the job has left the queue (requeues included)
wait_gone() {
  local end=$(($(date +%s) + $2))
  while [ -n "$(squeue -h -j "$1" -o %T 2>/dev/null)" ]; do
    [ "$(date +%s)" -lt "$end" ] || { scancel "$1"; fail "job $1 still queued or running after $2 s"; }
    sleep 1
  done
}
# wait_for FILE REGEX SECONDS
wait_for() {
  local end=$(($(date +%s) + $3))
  until [ -f "$1" ] && grep -Eq "$2" "$1"; do
    [ "$(date +%s)" -lt "$end" ] || fail "'$2' did not appear in $1 within $3 s"
    sleep 0.5
  done
}
same_as_ref() { # NAME
  "$py" "$src/tests/run/compare_results.py" "$dir/ref/results.h5" "$dir/$1/results.h5" >"$dir/$1.compare" 2>&1 ||
    { cat "$dir/$1.compare"; fail "$1: results differ from the uninterrupted run"; }
}
export RESAE_BIN=$resae
unset RESAE_LAUNCHER RESAE_TEST_HOLD RESAE_MAX_REQUEUES RESAE_SRUN_ARGS RESAE_MPIRUN_ARGS

# ---- the uninterrupted reference, outside Slurm, at 2 ranks like the jobs ------------------------
make_config ref
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$mpiexec" --oversubscribe --bind-to none -n 2 \
  "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "the reference run"; }

# ---- defaults: no --nodes, --ntasks or --time -----------------------------------------------------
make_config defaults
t=$(date +%s)
jd=$(submit defaults)
wait_gone "$jd" 120
grep -q "the experiment is complete" "$dir/defaults.out" || fail "defaults: the job did not complete"
ncpu=$(sinfo -h -o %c | head -1)
grep -q -- "--ntasks-per-node=$ncpu .*resae run" "$dir/defaults.out" || fail "defaults: not one rank per CPU ($ncpu)"
grep -q "MPI: $ncpu rank(s)" "$dir/defaults.out" || fail "defaults: resae did not run $ncpu ranks"
"$py" "$src/tests/run/compare_results.py" "$dir/defaults/results.h5" >/dev/null || fail "defaults: results check"
echo "defaults: job $jd started with the script's own resources (1 node, exclusive, the partition's time limit) and completed at $ncpu ranks in $(el "$t") s"

# ---- the requeue chains, the cap, the scancel and the broken config, side by side -----------------
holds=harvest,train,evaluate
# --oversubscribe cancels the script's --exclusive: the 2-rank jobs share the node
chain_opts=(--oversubscribe --nodes=1 --ntasks-per-node=2 --time=1 --signal=B:USR1@60)
small_opts=(--oversubscribe --nodes=1 --ntasks-per-node=2 --time=5)
for n in srun mpirun cap scancel; do make_config "$n"; done
make_config broken
sed -i 's/k: \[4, 8\]/k: [4, eight]/' "$dir/broken.yaml"
t_chain=$(date +%s)
js=$(RESAE_TEST_HOLD=$holds submit srun "${chain_opts[@]}")
jm=$(unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
  RESAE_LAUNCHER=mpirun RESAE_TEST_HOLD=$holds submit mpirun "${chain_opts[@]}")
jc=$(RESAE_TEST_HOLD=$holds RESAE_MAX_REQUEUES=1 submit cap "${chain_opts[@]}")
jx=$(RESAE_TEST_HOLD=train submit scancel "${small_opts[@]}")
jb=$(submit broken "${small_opts[@]}")

# scancel: status from this shell while the job holds in training, then cancel it
wait_for "$dir/scancel.out" "test hold \(RESAE_TEST_HOLD\): in stage train" 120
"$resae" status "$dir/scancel" >"$dir/scancel.status" 2>&1
grep -q "^last run: running (Slurm job $jx)" "$dir/scancel.status" || { cat "$dir/scancel.status"; fail "resae status does not show the running job $jx"; }
grep -Eq "^  train .* running [1-9]" "$dir/scancel.status" || { cat "$dir/scancel.status"; fail "resae status shows no running SAE"; }
echo "status: read from another shell while job $jx runs: $(grep '^last run' "$dir/scancel.status" | cut -d';' -f1)"
scancel "$jx"
wait_gone "$jx" 60
grep -q "SIGTERM received" "$dir/scancel.out" || fail "scancel: the script did not see SIGTERM"
grep -q "not requeued: submit the same command again" "$dir/scancel.out" || fail "scancel: no 'not requeued' message"
[ "$(job_field "$jx" Restarts)" = 0 ] || fail "scancel: the cancelled job was requeued"
jx2=$(submit scancel "${small_opts[@]}")
wait_gone "$jx2" 180
grep -q "the experiment is complete" "$dir/scancel.out" || fail "scancel: the resubmitted job did not complete"
grep -Eq "scheduler: [0-9]+ tasks, [1-9][0-9]* done before" "$dir/scancel.out" || fail "scancel: the resubmission did not resume"
"$py" "$src/tests/run/no_rerun.py" "$dir/scancel.out" || fail "scancel: a finished task ran again"
same_as_ref scancel
echo "scancel: job $jx cancelled while training (checkpointed, not requeued); job $jx2 resumed it: $(grep -Eo "[0-9]+ tasks, [0-9]+ done before" "$dir/scancel.out" | tail -1), results identical"

# broken: fails once, not requeued, the error in the output
wait_gone "$jb" 120
[ "$(job_field "$jb" JobState)" = FAILED ] || fail "broken: job state $(job_field "$jb" JobState), expected FAILED"
[ "$(job_field "$jb" Restarts)" = 0 ] || fail "broken: the failed job was requeued"
grep -q "not requeued" "$dir/broken.out" || fail "broken: no 'not requeued' message"
grep -q "broken.yaml:[0-9]*:[0-9]*: sae.k\[1\]: expected an integer" "$dir/broken.out" ||
  fail "broken: the output does not name the file and the field"
echo "broken: job $jb failed at once, not requeued: $(grep -m1 -E "error|ERROR" "$dir/broken.out" | cut -c1-160)"

# the chains: one allocation per held stage, then the last one completes
check_chain() { # NAME JOB
  local name=$1 j=$2 o=$dir/$1.out
  [ "$(job_field "$j" JobState)" = COMPLETED ] || fail "$name: job state $(job_field "$j" JobState)"
  [ "$(job_field "$j" Restarts)" = 3 ] || fail "$name: $(job_field "$j" Restarts) restarts, expected 3"
  "$py" - "$o" "$holds" <<'PY' || fail "$name: an allocation did not stop in its stage"
import re, sys
text = open(sys.argv[1], errors="replace").read()
stages = sys.argv[2].split(",")
parts = re.split(r"^resae\.sbatch: job \d+ \(restart (\d+)\)", text, flags=re.M)
allocs = {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}
assert sorted(allocs) == [0, 1, 2, 3], f"allocations {sorted(allocs)}"
for r, stage in enumerate(stages):
    a = allocs[r]
    for want in (f"test hold (RESAE_TEST_HOLD): in stage {stage}", "SIGUSR1 received", "test hold: stop request received",
                 "incomplete (checkpointed); requeueing job"):
        assert want in a, f"allocation {r}: no '{want}'"
assert "the experiment is complete" in allocs[3], "the last allocation did not complete"
print("allocations: " + ", ".join(f"{r}: SIGUSR1 in {s}" for r, s in enumerate(stages)) + ", 3: complete")
PY
  "$py" "$src/tests/run/no_rerun.py" "$o" || fail "$name: a finished task ran again"
  same_as_ref "$name"
}
wait_gone "$js" 600
wait_gone "$jm" 600
t_chains=$(el "$t_chain")
check_chain srun "$js"
grep -q "(auto: srun offers PMIx): srun --kill-on-bad-exit=1 --mpi=pmix" "$dir/srun.out" || fail "srun: the automatic launcher is not srun --mpi=pmix"
check_chain mpirun "$jm"
grep -q ": mpirun " "$dir/mpirun.out" || fail "mpirun: not launched with mpirun"
for n in srun mpirun; do
  j=$js; [ $n = mpirun ] && j=$jm
  # (Slurm resets SubmitTime at each requeue: the time is from this script's sbatch)
  echo "$n: job $j, $(job_field "$j" Restarts) requeues (SIGUSR1 from the time limit in harvest, train, evaluate), complete; submit to complete $(($(date -d "$(job_field "$j" EndTime)" +%s) - t_chain)) s; results bitwise equal to the uninterrupted run"
done

# the cap: stopped after its one requeue
wait_gone "$jc" 300
[ "$(job_field "$jc" Restarts)" = 1 ] || fail "cap: $(job_field "$jc" Restarts) restarts, expected 1"
grep -q "incomplete after 1 requeues (RESAE_MAX_REQUEUES=1); submit again to continue" "$dir/cap.out" || fail "cap: no message at the cap"
[ "$(job_field "$jc" JobState)" = FAILED ] || fail "cap: job state $(job_field "$jc" JobState), expected FAILED (exit 3)"
echo "cap: job $jc requeued once, then stopped: $(grep -o "incomplete after 1 requeues.*" "$dir/cap.out")"

echo "Slurm: every sbatch case passed (the chains took $t_chains s side by side; $(el "$t0") s in all)"
