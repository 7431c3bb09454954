#!/usr/bin/env bash
# One rank SIGKILLed inside the collectives of a task, on the small fixture experiment run by one
# group of 2 ranks (every task on both ranks: the harvest's reductions and writes, the ScaLAPACK
# solve of the affine fits, the all-reduces of every SAE step). For each of harvest, affine and sae:
# start the run, SIGKILL rank 1 as soon as a task of that kind has started and not finished, and
# measure the time until mpirun has ended (limit 60 s: never a hang). Then the same command must
# finish with results identical to an uninterrupted run.
# usage: dead_rank.sh RESAE MPIEXEC OUT_DIR SRC_DIR
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4
py=/usr/bin/python3
data=$src/tests/data/pipeline
dir=$out/pipeline_dead_rank
rm -rf "$dir"; mkdir -p "$dir"
fail() { echo "FAIL: $*"; exit 1; }
mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }
now() { date +%s.%N; }
make_config() {
  sed -e "s#^run_dir:.*#run_dir: $2#" -e "s#path: model#path: $data/model#" \
      -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" "$data/small.yaml" >"$1"
  printf 'parallel:\n  group_size: 2\n' >>"$1"
}
make_config "$dir/ref.yaml" "$dir/ref"
mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -20 "$dir/ref.log"; fail "reference run"; }
worst=0
for kind in harvest affine sae; do
  make_config "$dir/$kind.yaml" "$dir/$kind"
  # the stages before this one, finished, so that the kill lands in the first task of its kind
  case $kind in
  affine) mpi 2 "$resae" run --until harvest "$dir/$kind.yaml" >"$dir/$kind.pre.log" 2>&1 || fail "$kind: run --until harvest" ;;
  sae) mpi 2 "$resae" run --until affine "$dir/$kind.yaml" >"$dir/$kind.pre.log" 2>&1 || fail "$kind: run --until affine" ;;
  esac
  log=$dir/$kind.log
  mpi 2 "$resae" run "$dir/$kind.yaml" >"$log" 2>&1 &
  pid=$!
  pat="^$resae run $dir/$kind.yaml"
  for _ in $(seq 1 2000); do
    grep -qE "INFO  task $kind( [^:]+)?: start" "$log" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.005
  done
  # rank 1: the second process of the job
  victim=$(pgrep -f "$pat" | sort -n | tail -1)
  [ -n "$victim" ] || fail "$kind: no rank to kill (did the run end before its first $kind task?)"
  running=$(grep -oE "INFO  task [a-z]+( [^:]+)?: (start|done)" "$log" | tail -1)
  t0=$(now)
  kill -KILL "$victim"
  for _ in $(seq 1 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  if kill -0 $pid 2>/dev/null; then
    pkill -KILL -f "$pat"; kill -KILL $pid 2>/dev/null
    fail "$kind: the job did not end within 60 s of a rank's death"
  fi
  wait $pid; rc=$?
  took=$("$py" -c "print(f'{$(now) - $t0:.1f}')")
  for _ in $(seq 1 100); do pgrep -f "$pat" >/dev/null || break; sleep 0.1; done
  pgrep -f "$pat" >/dev/null && { pkill -KILL -f "$pat"; fail "$kind: ranks still alive 10 s after the job ended"; }
  echo "$kind: rank 1 (pid $victim) killed at '${running#INFO  }': mpirun exit $rc, the job ended ${took}s after the kill"
  case $running in *": start") ;; *) fail "$kind: the kill did not land inside a task (last line: $running)" ;; esac
  [ "$rc" != 0 ] || fail "$kind: mpirun exit 0 after a rank was killed"
  worst=$("$py" -c "print(max($worst, $took))")
  mpi 2 "$resae" run "$dir/$kind.yaml" >"$dir/$kind.again.log" 2>&1 || { tail -20 "$dir/$kind.again.log"; fail "$kind: restart"; }
  "$py" "$src/tests/run/compare_results.py" "$dir/ref/results.h5" "$dir/$kind/results.h5" >"$dir/$kind.cmp" 2>&1 ||
    { cat "$dir/$kind.cmp"; fail "$kind: results after the restart differ from the uninterrupted run"; }
done
echo "a rank killed inside harvest, affine and sae tasks: the job ended within ${worst}s each time, restarts gave identical results"
