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
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4 mode=$5 arg=${6:-}
py=/usr/bin/python3
check=$src/tests/pipeline/compare_results.py
data=$src/tests/data/pipeline
RANDOM=${RESAE_TEST_SEED:-$$}

mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }
# a copy of the config with its own run directory and absolute data paths
make_config() {
  sed -e "s#^run_dir:.*#run_dir: $2#" -e "s#path: model#path: $data/model#" \
      -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" "$data/small.yaml" >"$1"
}
fail() { echo "FAIL: $*"; exit 1; }

case $mode in
harvest)
  # stores from 1, 2 and 4 ranks are identical, and equal `resae forward`'s residual streams
  dir=$out/pipeline_harvest; rm -rf "$dir"; mkdir -p "$dir"
  for n in 1 2 4; do
    make_config "$dir/np$n.yaml" "$dir/np$n"
    mpi "$n" "$resae" run --until harvest "$dir/np$n.yaml" >"$dir/np$n.log" 2>&1 || { tail -30 "$dir/np$n.log"; fail "harvest at $n ranks"; }
    grep -q "stopped after stage harvest" "$dir/np$n.log" || fail "--until harvest did not stop after the harvest"
  done
  for n in 2 4; do
    h5diff "$dir/np1/activations.h5" "$dir/np$n/activations.h5" || fail "store at $n ranks differs from 1 rank"
  done
  "$resae" forward --model "$data/model" --tokens "$data/tokens.h5" --out "$dir/forward.h5" --layers 0,1,2,3 \
    >"$dir/forward.log" 2>&1 || { tail "$dir/forward.log"; fail "resae forward"; }
  "$py" "$src/tests/pipeline/check_store_vs_forward.py" "$dir/np1/activations.h5" "$dir/forward.h5" || fail "store vs forward"
  echo "harvest stores at 1, 2, 4 ranks identical and equal to resae forward"
  ;;
ranks)
  dir=$out/pipeline_np$arg; rm -rf "$dir"; mkdir -p "$dir"
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
  cp "$dir/run/results.h5" "$dir/first.h5"
  mpi "$arg" "$resae" run "$dir/small.yaml" >"$dir/log2" 2>&1 || { tail -30 "$dir/log2"; fail "second run"; }
  grep -q "affine: .* 0 to do" "$dir/log2" || fail "second run redid affine fits"
  grep -q "train: .* 0 to do" "$dir/log2" || fail "second run retrained SAEs"
  grep -q "evaluate: .* 0 to do" "$dir/log2" || fail "second run redid evaluations"
  "$py" "$check" "$dir/first.h5" "$dir/run/results.h5" || fail "second run changed the results"
  echo "pipeline at $arg ranks: ok"
  ;;
kill)
  dir=$out/pipeline_kill; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/ref.yaml" "$dir/ref"
  make_config "$dir/run.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "reference run"; }
  for i in 1 2 3 4; do
    mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run$i.log" 2>&1 &
    pid=$!
    delay=$(( (RANDOM % 40) + 5 ))      # 0.5 .. 4.4 s
    sleep "$((delay / 10)).$((delay % 10))"
    pkill -KILL -f "^$resae run $dir/run.yaml" 2>/dev/null
    wait $pid; rc=$?
    echo "kill $i after ${delay}00 ms: exit $rc, $(ls "$dir/run/tasks" 2>/dev/null | grep -c '\.h5$') task files"
  done
  mpi 2 "$resae" run "$dir/run.yaml" >"$dir/final.log" 2>&1 || { tail -30 "$dir/final.log"; fail "final run"; }
  ls "$dir/run/tasks" | grep -q '\.tmp$' && fail "a temporary task file was left behind"
  "$py" "$check" "$dir/ref/results.h5" "$dir/run/results.h5" || fail "killed and restarted results differ"
  echo "killed 4 times and restarted: results identical to the uninterrupted run"
  ;;
killeval)
  # SIGKILL inside the evaluation stage: the restart keeps the finished evaluation task files, runs
  # only the others, and the results equal an uninterrupted run's
  dir=$out/pipeline_killeval; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/ref.yaml" "$dir/ref"
  make_config "$dir/run.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "reference run"; }
  mpi 2 "$resae" run --until train "$dir/run.yaml" >"$dir/train.log" 2>&1 || { tail -30 "$dir/train.log"; fail "run --until train"; }
  mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do grep -q "INFO  eval " "$dir/run1.log" && break; sleep 0.05; done
  pkill -KILL -f "^$resae run $dir/run.yaml" 2>/dev/null
  wait $pid
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
  dir=$out/pipeline_term; rm -rf "$dir"; mkdir -p "$dir"
  make_config "$dir/ref.yaml" "$dir/ref"
  make_config "$dir/run.yaml" "$dir/run"
  mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -30 "$dir/ref.log"; fail "reference run"; }
  # 1: SIGTERM to every rank (as srun delivers it); 2: SIGUSR1 to mpirun, which forwards it
  for i in 1 2; do
    mpi 2 "$resae" run "$dir/run.yaml" >"$dir/run$i.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do grep -q "stage train" "$dir/run$i.log" && break; sleep 0.1; done
    sleep 0.$((RANDOM % 8 + 1))
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
*) fail "unknown mode $mode" ;;
esac
