#!/bin/bash
# jobs/slurm/resae.sbatch outside Slurm, with stand-ins for srun and scontrol (tests/run/fake_slurm)
# and tests/run/test_sched as the program: SIGUSR1 to the batch script reaches every rank, the
# program exits with code 3, and the script asks scontrol to requeue the job; run again (as the
# requeued job would), it completes and exits 0. This checks the script's own logic only.
#   sbatch_local.sh REPO TEST_SCHED MPIEXEC OUT
set -u
repo=$1 bin=$2 mpiexec=$3 out=$4
dir=$out/sched_sbatch_local
rm -rf "$dir"; mkdir -p "$dir"
fail() { echo "FAIL: $*" >&2; exit 1; }
export PATH=$repo/tests/run/fake_slurm:$PATH RESAE_FAKE_MPIEXEC=$mpiexec RESAE_FAKE_NP=2
export RESAE_FAKE_LOG=$dir/scontrol.log RESAE_BIN=$bin SLURM_JOB_ID=4242 RESAE_SRUN_ARGS=
export RESAE_SCHED_TEST_SCALE=4

# the program is `test_sched run RUNDIR`: the script calls "$bin run [args] CONFIG"
bash "$repo/jobs/slurm/resae.sbatch" "$dir/run" >"$dir/job1.log" 2>&1 &
job=$!
for _ in $(seq 1 200); do [ -d "$dir/run/res" ] && break; sleep 0.05; done
sleep 1.5
kill -USR1 "$job"
wait "$job"; rc=$?
cat "$dir/job1.log"
[ $rc = 0 ] || fail "first job: the script exited with $rc, expected 0 after requeueing"
grep -q "SIGUSR1 received" "$dir/job1.log" || fail "the script did not take SIGUSR1"
grep -q "exit 3\|requeueing job 4242" "$dir/job1.log" || fail "no requeue after exit code 3"
grep -qx "requeue 4242" "$dir/scontrol.log" || fail "scontrol requeue was not called"
SLURM_RESTART_COUNT=1 bash "$repo/jobs/slurm/resae.sbatch" "$dir/run" >"$dir/job2.log" 2>&1; rc=$?
grep resae.sbatch "$dir/job2.log"
[ $rc = 0 ] || fail "requeued job: exit $rc"
grep -q "the experiment is complete" "$dir/job2.log" || fail "the requeued job did not complete"
[ "$(wc -l <"$dir/scontrol.log")" = 1 ] || fail "the complete job requeued itself"
grep -q "(auto: srun offers PMIx): srun " "$dir/job1.log" || fail "RESAE_LAUNCHER unset: srun was not chosen where srun offers PMIx"
# without PMIx in srun the script chooses mpirun (here on /bin/true: only the choice is checked)
RESAE_FAKE_PMIX=0 RESAE_BIN=/bin/true bash "$repo/jobs/slurm/resae.sbatch" "$dir/run" >"$dir/job3.log" 2>&1 ||
  { cat "$dir/job3.log"; fail "the mpirun launcher on /bin/true"; }
grep -q "(auto: srun does not offer PMIx): mpirun " "$dir/job3.log" || { cat "$dir/job3.log"; fail "RESAE_LAUNCHER unset: mpirun was not chosen without PMIx"; }
echo "sbatch script (outside Slurm, stand-ins for srun/scontrol): SIGUSR1 -> exit 3 -> requeue -> complete"
