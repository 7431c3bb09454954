#!/usr/bin/env bash
# A harvest killed with SIGKILL (every rank at once) at random points, restarted each time with a
# different rank count, ends with a store identical to an uninterrupted one. The kills are timed by
# the journal's growth plus a random delay, so they land mid-round, mid-flush or mid-append; one
# interruption is a SIGTERM, which must stop cleanly with exit code 3.
# usage: kill_restart.sh DRIVER MPIEXEC OUT_DIR SRC_DIR [SEED]
set -uo pipefail
driver=$1 mpiexec=$2 out=$3/kill_restart src=$4
RANDOM=${5:-$$}
py=/usr/bin/python3
rm -rf "$out" && mkdir -p "$out/pids"
opts=(--batch 1 --dtype float16)   # 96 batches: the runs below never get near the end
mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }

mpi 2 "$driver" "$out/ref" "${opts[@]}" >"$out/ref.log" 2>&1 || { cat "$out/ref.log"; echo "FAIL: reference"; exit 1; }

# a store whose creation was cut short (a truncated file, no journal) is recreated, not trusted
mkdir -p "$out/run" && head -c 5000 "$out/ref/activations.h5" >"$out/run/activations.h5"
journal=$out/run/harvest.journal
lines() { [ -f "$journal" ] && wc -l <"$journal" || echo 0; }
ranks=(2 4 1 2)
for i in 0 1 2 3; do
  n=${ranks[$i]}
  rm -f "$out/pids"/pid.*
  before=$(lines)
  target=$((before + 2 + RANDOM % 8))
  # runs 1 and 2 checkpoint every 50 ms: round agreements that complete a round later
  flush=()
  [ $i = 1 ] || [ $i = 2 ] && flush=(--flush-seconds 0.05)
  mpi "$n" "$driver" "$out/run" "${opts[@]}" "${flush[@]}" --sleep-us 30000 --pid-dir "$out/pids" >"$out/run$i.log" 2>&1 &
  mpirun_pid=$!
  # wait for the journal to grow past the target, then a random 0-90 ms
  for _ in $(seq 1 400); do
    [ "$(lines)" -ge "$target" ] && break
    kill -0 $mpirun_pid 2>/dev/null || break
    sleep 0.02
  done
  sleep "0.0$((RANDOM % 10))"
  sig=KILL
  [ $i = 2 ] && sig=TERM
  pids=$(cat "$out/pids"/pid.* 2>/dev/null)
  [ -n "$pids" ] && kill -s $sig $pids 2>/dev/null
  wait $mpirun_pid
  rc=$?
  after=$(lines)
  echo "run $i: $n ranks, SIG$sig at journal line $after (target $target), exit $rc"
  if grep -q '^complete$' "$journal" 2>/dev/null; then
    echo "FAIL: the harvest finished before the kill (make it slower)"; cat "$out/run$i.log"; exit 1
  fi
  if [ $sig = TERM ] && [ $rc != 3 ]; then echo "FAIL: SIGTERM should exit 3"; cat "$out/run$i.log"; exit 1; fi
  if [ $sig = KILL ] && [ $rc = 0 ]; then echo "FAIL: a killed run exited 0"; exit 1; fi
  if [ $i = 0 ] && ! grep -q "new store" "$out/run$i.log"; then
    echo "FAIL: the truncated store was not recreated"; cat "$out/run$i.log"; exit 1
  fi
  if [ $i -gt 0 ] && ! grep -q "resuming" "$out/run$i.log"; then
    echo "FAIL: run $i did not resume"; cat "$out/run$i.log"; exit 1
  fi
done
# the store of a killed writer reopens (serial HDF5, read-only) before the final run
"$py" "$src/analysis/store_info.py" "$out/run" >/dev/null || { echo "FAIL: killed store does not reopen"; exit 1; }
mpi 2 "$driver" "$out/run" "${opts[@]}" --check >"$out/final.log" 2>&1 || { cat "$out/final.log"; echo "FAIL: final run"; exit 1; }
grep "harvest done" "$out/final.log"
skipped=$(sed -n 's/.* \([0-9]*\) skipped.*/\1/p' "$out/final.log")
[ "${skipped:-0}" -gt 0 ] || { echo "FAIL: final run skipped nothing"; exit 1; }
grep -q '^complete$' "$journal" || { echo "FAIL: journal not complete"; exit 1; }
h5diff "$out/ref/activations.h5" "$out/run/activations.h5" || { echo "FAIL: h5diff killed vs reference"; exit 1; }
"$py" "$src/analysis/store_info.py" "$out/ref" --compare "$out/run" | tail -1 | grep -q "store check: ok" \
  || { "$py" "$src/analysis/store_info.py" "$out/ref" --compare "$out/run" | tail; exit 1; }
echo "killed and restarted harvest identical to the uninterrupted one: ok"
