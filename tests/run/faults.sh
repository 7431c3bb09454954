#!/bin/bash
# The scheduler under faults, with tests/run/test_sched.c's synthetic graph.
#
#   faults.sh kill TEST_SCHED MPIEXEC OUT NP GS   SIGKILL every rank at random moments (5 times,
#       restarting after each), then run to the end: every task done, none that had finished
#       before a kill ran again (the task records that itself), dependencies respected; then a
#       run whose done() forgets everything must be caught by the same check
#   faults.sh term TEST_SCHED MPIEXEC OUT NP GS   SIGTERM to every rank mid-run: exit code 3 within
#       5 s; SIGUSR1 to mpirun (forwarded to the ranks) the same; SIGTERM to the last rank only
#       the same; then the run completes
#   faults.sh failexit TEST_SCHED MPIEXEC OUT NP GS   a task that always fails: exit code 1 and the
#       failed and skipped tasks named
set -u
mode=$1 bin=$2 mpiexec=$3 out=$4 np=$5 gs=$6
dir=$out/sched_${mode}_np${np}_gs${gs}
mpi1=("$mpiexec" --oversubscribe --bind-to none --mca btl "self,vader")
mpi=("${mpi1[@]}" -n "$np")
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$dir"; mkdir -p "$dir"

# Start a run in the background (its log under $dir/logs); sets $job.
start() {
  rm -rf "$dir/run/pids"
  mkdir -p "$dir/logs"
  "${mpi[@]}" "$bin" run "$dir/run" "$gs" "$@" >>"$dir/logs/run.log" 2>&1 &
  job=$!
}

# Wait until every rank has written its pid file (10 s at most); prints the pids.
rank_pids() {
  local i
  for i in $(seq 1 200); do
    if [ "$(find "$dir/run/pids" -name '*.pid' 2>/dev/null | wc -l)" -ge "$np" ]; then cat "$dir/run/pids"/*.pid; return 0; fi
    sleep 0.05
  done
  return 1
}

n_results() { find "$dir/run/res" -name '*.txt' 2>/dev/null | wc -l; }

case $mode in
kill)
  RANDOM=$((np * 100 + gs))
  for i in 1 2 3 4 5; do
    start --scale 2
    pids=$(rank_pids) || { kill -KILL "$job" 2>/dev/null; fail "the ranks did not start"; }
    ms=$((RANDOM % 2400 + 50))
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    wait "$job"; rc=$?
    echo "kill $i after $ms ms: exit $rc, $(n_results) task results"
  done
  start --scale 2
  wait "$job"; rc=$?
  [ $rc = 0 ] || { tail -30 "$dir/logs/run.log"; fail "the run after the kills ended with exit $rc"; }
  "${mpi1[@]}" -n 1 "$bin" check "$dir/run" || fail "check failed"
  starts=$(grep -c '^start' "$dir/run/starts.log")
  echo "killed 5 times and restarted: every task done once, $starts task starts in all (re-runs only of tasks in flight)"
  # self-test: a scheduler that forgot what was done would run finished tasks again; the check sees it
  RESAE_SCHED_TEST_FORGET=1 "${mpi[@]}" "$bin" run "$dir/run" "$gs" >>"$dir/logs/run.log" 2>&1
  if "${mpi1[@]}" -n 1 "$bin" check "$dir/run" >/dev/null 2>&1; then fail "the check missed re-runs of finished tasks"; fi
  echo "self-test: re-runs of finished tasks are detected"
  ;;
term)
  for sig in TERM USR1 TERM1; do
    start --scale 4
    pids=$(rank_pids) || fail "the ranks did not start"
    sleep 1.2
    t0=$(date +%s%N)
    # SIGTERM to every rank (as Slurm delivers it); SIGUSR1 to mpirun, which forwards it;
    # SIGTERM to the last rank only (not a group leader when groups have 2 ranks)
    # shellcheck disable=SC2086
    case $sig in
    TERM) kill -TERM $pids ;;
    USR1) kill -USR1 "$job" ;;
    TERM1) kill -TERM "$(cat "$dir/run/pids/rank$((np - 1)).pid")" ;;
    esac
    wait "$job"; rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    echo "SIG$sig: exit $rc after $ms ms, $(n_results) task results"
    [ $rc = 3 ] || { tail -30 "$dir/logs/run.log"; fail "SIG$sig: exit code $rc, expected 3"; }
    # sanitizer builds spend seconds in their exit-time checks: RESAE_SCHED_STOP_MS raises the limit
    [ "$ms" -lt "${RESAE_SCHED_STOP_MS:-5000}" ] || fail "SIG$sig: took $ms ms to stop"
  done
  grep -q "stop requested" "$dir/logs/run.log" || fail "no 'stop requested' in the log"
  start --scale 4
  wait "$job"; rc=$?
  [ $rc = 0 ] || { tail -30 "$dir/logs/run.log"; fail "the resumed run ended with exit $rc"; }
  "${mpi1[@]}" -n 1 "$bin" check "$dir/run" || fail "check failed"
  echo "SIGTERM/SIGUSR1/SIGTERM to one rank: exit 3 within $((${RESAE_SCHED_STOP_MS:-5000} / 1000)) s, resumed, complete"
  ;;
failexit)
  start --fail
  wait "$job"; rc=$?
  [ $rc = 1 ] || { tail -30 "$dir/logs/run.log"; fail "exit code $rc with a failing task, expected 1"; }
  grep -q "error: 1 task(s) failed: broken (3 attempts" "$dir/logs/run.log" || fail "the failed task is not reported"
  grep -q "skipped because a dependency failed: after_broken, after_after_broken" "$dir/logs/run.log" \
    || fail "the skipped tasks are not reported"
  # a second run retries the failed task (the marker makes 'flaky' succeed now) and skips nothing done
  start --fail
  wait "$job"; rc=$?
  [ $rc = 1 ] || fail "second run: exit code $rc, expected 1"
  grep -c '^start flaky' "$dir/run/starts.log" | grep -qx 2 || fail "flaky ran again after it had finished"
  echo "failing task: exit 1, failed and skipped tasks reported"
  ;;
*) fail "unknown mode $mode" ;;
esac
