#!/usr/bin/env bash
# Resume after SIGKILL: an uninterrupted run and a run killed (SIGKILL to every rank) at a random
# moment after its first checkpoint, then resumed, must end with bitwise identical weights and
# Adam state at the same rank count.
#   resume_kill.sh DRIVER NP OUTDIR [MPIEXEC...]
set -uo pipefail
driver=$1 np=$2 out=$3
shift 3
mpiexec=("$@")
[ ${#mpiexec[@]} -gt 0 ] || mpiexec=(mpirun --oversubscribe --bind-to none --mca btl self,vader)
dir=$out/sae_resume_np$np
rm -rf "$dir" && mkdir -p "$dir" || exit 1
steps=120

t0=$(date +%s.%N)
"${mpiexec[@]}" -n "$np" "$driver" "$dir/ref.ckpt" "$dir/ref.out" $steps > "$dir/ref.log" 2>&1 || {
  echo "FAIL: uninterrupted run failed"; cat "$dir/ref.log"; exit 1; }
t1=$(date +%s.%N)
dur=$(echo "$t1 - $t0" | bc -l)
echo "uninterrupted run: ${dur}s"

for attempt in 1 2 3 4 5; do
  rm -f "$dir/run.ckpt" "$dir/run.out"
  "${mpiexec[@]}" -n "$np" "$driver" "$dir/run.ckpt" "$dir/run.out" $steps > "$dir/run1.log" 2>&1 &
  mpid=$!
  # wait for the first checkpoint
  for i in $(seq 1 2000); do
    [ -e "$dir/run.ckpt" ] && break
    kill -0 $mpid 2>/dev/null || break
    sleep 0.005
  done
  # then a random delay, up to half the run
  delay=$(echo "scale=3; ($RANDOM / 32767) * $dur / 2" | bc -l)
  sleep "$delay"
  ranks=$(pgrep -P $mpid || true)
  if [ -z "$ranks" ] || ! kill -0 $mpid 2>/dev/null; then
    wait $mpid
    echo "attempt $attempt: the run finished before the kill; retrying"
    dur=$(echo "$dur / 2" | bc -l)
    continue
  fi
  kill -9 $ranks
  wait $mpid
  echo "attempt $attempt: killed ranks ($ranks) with SIGKILL after ${delay}s"
  if [ -e "$dir/run.out" ]; then echo "attempt $attempt: output already complete; retrying"; continue; fi
  "${mpiexec[@]}" -n "$np" "$driver" "$dir/run.ckpt" "$dir/run.out" $steps > "$dir/run2.log" 2>&1 || {
    echo "FAIL: resumed run failed"; cat "$dir/run2.log"; exit 1; }
  grep -h resumed_from "$dir/run2.log"
  from=$(sed -n 's/^resumed_from \([-0-9]*\).*/\1/p' "$dir/run2.log")
  if [ -z "$from" ] || [ "$from" -le 0 ]; then echo "FAIL: the second run did not resume (resumed_from '$from')"; exit 1; fi
  if cmp "$dir/ref.out" "$dir/run.out"; then
    echo "ok: resumed from step $from; final weights and Adam state bitwise identical at $np rank(s)"
    rm -rf "$dir"
    exit 0
  fi
  echo "FAIL: resumed weights differ from the uninterrupted run"
  exit 1
done
echo "FAIL: could not interrupt the run in 5 attempts"
exit 1
