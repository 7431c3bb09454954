#!/usr/bin/env bash
# Kill a whole experiment grid with SIGKILL at random moments, restart it after each kill with the
# same command, and compare the final results with an uninterrupted run at the same rank count.
#
# usage: tests/run/kill_grid.sh RESAE CONFIG KILLS RANKS OUT_DIR [MPIEXEC]
#   e.g. tests/run/kill_grid.sh build/resae configs/demo.yaml 10 2 /tmp/demo-kill
#
# 1. An uninterrupted reference run (its wall time T sets the kill delays).
# 2. KILLS times: start the run and, once its ranks are past MPI_Init (first log line), SIGKILL it
#    at a random moment, either every rank at once or
#    one random rank (a lost node; mpirun then takes the others down). The moments: the first kill
#    after a random delay in [DMIN, DMIN + T/10] (RESAE_KILL_DMIN, default 1.5 s: start-up and
#    harvest); each later one once the run directory holds a random number of task files (KILLS - 1
#    distinct counts drawn from 1 .. all but two, sorted) plus a random delay of up to one average
#    task time, so kills land inside tasks of every stage. An attempt that finishes on its own
#    before its kill fails the test.
# 3. A final run to completion. Then: results identical to the reference (compare_results.py,
#    bitwise); no task that an attempt reported done was started again by a later attempt (only
#    tasks in flight at a kill run again; the harvest always starts and reuses its store); no
#    temporary files left; `resae status` says complete.
# Prints the kill moments, the task files present after each kill, and the times. Exit 0 only if
# every check passed. RESAE_TEST_SEED fixes the random moments.
set -uo pipefail
resae=$1 config=$2 kills=$3 ranks=$4 out=$5 mpiexec=${6:-mpirun}
src=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3
RANDOM=${RESAE_TEST_SEED:-$$}
dmin=${RESAE_KILL_DMIN:-1.5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1} OMPI_MCA_plm=${OMPI_MCA_plm:-isolated}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
fail() { echo "FAIL: $*"; exit 1; }
mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$ranks" "$@"; }
now() { date +%s.%N; }
elapsed() { "$py" -c "print(f'{$2 - $1:.1f}')"; }

rm -rf "$out" && mkdir -p "$out" || fail "cannot create $out"
out=$(cd "$out" && pwd)
# the resolved config (absolute data paths) with the run directory moved under OUT
for r in ref run; do
  "$resae" validate --no-grid "$config" >"$out/$r.yaml.tmp" 2>"$out/validate.err" || { cat "$out/validate.err"; fail "resae validate $config"; }
  sed "s#^run_dir:.*#run_dir: $out/$r#" "$out/$r.yaml.tmp" >"$out/$r.yaml" && rm -f "$out/$r.yaml.tmp"
done

t0=$(now)
mpi "$resae" run "$out/ref.yaml" >"$out/ref.log" 2>&1 || { tail -30 "$out/ref.log"; fail "reference run"; }
T=$(elapsed "$t0" "$(now)")
n_files=$(ls "$out/ref/tasks" | grep -c '\.h5$')
[ "$n_files" -ge $((kills + 2)) ] || fail "the grid has $n_files task files: too few for $kills kills"
seed=$RANDOM
mapfile -t thresholds < <("$py" -c "import random; random.seed($seed)
print('\n'.join(map(str, sorted(random.sample(range(1, $n_files - 1), $kills - 1)))))")
echo "reference: uninterrupted run at $ranks ranks in ${T}s, $n_files task files; kills at 0 then ${thresholds[*]} task files (+ random delays)"

ntask() { ls "$out/run/tasks" 2>/dev/null | grep -c '\.h5$'; }
pat="^$resae run $out/run.yaml"
t1=$(now)
done_kills=0 attempt=0
while [ "$done_kills" -lt "$kills" ]; do
  attempt=$((attempt + 1))
  [ "$attempt" -le $((kills * 3)) ] || fail "only $done_kills kills landed in $attempt attempts: the grid is too short for $kills kills"
  log=$out/run$attempt.log
  mpi "$resae" run "$out/run.yaml" >"$log" 2>&1 &
  pid=$!
  if [ "$done_kills" = 0 ]; then
    delay=$("$py" -c "import random; random.seed($seed); print(f'{random.uniform($dmin, $dmin + $T / 10):.2f}')")
    want=0
  else
    want=${thresholds[$((done_kills - 1))]}
    delay=$("$py" -c "import random; random.seed($seed + $attempt); print(f'{random.uniform(0, $T / $n_files):.2f}')")
  fi
  # kills land after MPI_Init (the first log line): a rank killed inside MPI_Init can leave Open
  # MPI's launcher hanging (PMIx "UNREACHABLE"), which is the launcher's failure, not resae's
  for _ in $(seq 1 600); do grep -q " INFO " "$log" 2>/dev/null && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  # wait for the task-file count (polling every 50 ms), then the delay
  while kill -0 "$pid" 2>/dev/null && [ "$(ntask)" -lt "$want" ]; do sleep 0.05; done
  sleep "$delay"
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"; rc=$?
    echo "attempt $attempt: ended on its own (exit $rc) before the kill at $want task files + ${delay}s"
    [ "$rc" = 0 ] || { tail -30 "$log"; fail "attempt $attempt failed"; }
    break
  fi
  # every rank must exist before the kill (a kill before mpirun started them would miss)
  for _ in $(seq 1 100); do [ "$(pgrep -f "$pat" | wc -l)" -ge "$ranks" ] && break; sleep 0.1; done
  mapfile -t pids < <(pgrep -f "$pat")
  t_kill=$(now)
  during=$(grep -oE "INFO  task [a-z]+ [^:]+: start" "$log" | tail -1 | sed -E 's/INFO  task ([a-z]+) ([^:]+): start/\1 \2/')
  if [ $((RANDOM % 2)) = 0 ] || [ "${#pids[@]}" -lt 2 ]; then
    how="every rank"; pkill -KILL -f "$pat"
  else
    victim=${pids[$((RANDOM % ${#pids[@]}))]}; how="one rank (pid $victim)"; kill -KILL "$victim"
  fi
  # the launcher takes the other ranks down; give it 60 s
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
    fail "the launcher did not end within 60 s of the kill of attempt $attempt ($log)"
  fi
  wait "$pid"; rc=$?
  t_end=$(elapsed "$t_kill" "$(now)")
  # make sure no rank is left before the restart
  for _ in $(seq 1 100); do pgrep -f "$pat" >/dev/null || break; sleep 0.1; done
  pgrep -f "$pat" >/dev/null && { pkill -KILL -f "$pat"; fail "ranks still alive 10 s after the kill of attempt $attempt"; }
  done_kills=$((done_kills + 1))
  echo "kill $done_kills (attempt $attempt) at $want task files + ${delay}s, $how, last task started: ${during:-none}: mpirun exit $rc ${t_end}s after the kill; $(ntask) task files after"
done
mpi "$resae" run "$out/run.yaml" >"$out/final.log" 2>&1 || { tail -30 "$out/final.log"; fail "final run"; }
echo "killed run: $done_kills kills, completed in $(elapsed "$t1" "$(now)")s of wall time in all"

[ "$done_kills" -ge "$kills" ] || fail "only $done_kills of $kills kills landed before the grid finished"
ls "$out/run/tasks" "$out/run/ckpt" 2>/dev/null | grep -q '\.tmp$' && fail "a temporary file was left behind"
"$py" "$src/tests/run/compare_results.py" "$out/run/results.h5" || fail "the killed run's results are incomplete"
"$py" "$src/tests/run/compare_results.py" "$out/ref/results.h5" "$out/run/results.h5" ||
  fail "results after $done_kills kills differ from the uninterrupted run"
# no task reported done by one attempt started again in a later one
logs=()
for i in $(seq 1 "$attempt"); do [ -f "$out/run$i.log" ] && logs+=("$out/run$i.log"); done
"$py" "$src/tests/run/no_rerun.py" "${logs[@]}" "$out/final.log" || fail "a finished task ran again"
"$resae" status "$out/run" >"$out/status.txt" 2>&1 || { cat "$out/status.txt"; fail "resae status after the final run"; }
grep -q "^state: complete" "$out/status.txt" || { cat "$out/status.txt"; fail "resae status does not say complete"; }
echo "killed $done_kills times (SIGKILL) and restarted: results identical to the uninterrupted run"
