#!/usr/bin/env bash
# Disk full (ENOSPC) at each stage of `resae run` on the small fixture experiment: the run directory
# is on a size-limited tmpfs the test mounts, filled so that only so many bytes are left:
#   harvest   half the activation store
#   train     the store and 64 kB (affine task files, SAE checkpoints)
#   tasks     the store and half the task files
#   results   the store, the task files and half of results.h5 (the assembly)
# Each run must fail (exit non-zero) with an error that says "no space left on device" and names a
# file of the run directory; then the filler is removed and the same command must finish with
# results identical to an uninterrupted run elsewhere (nothing half-written was taken as done).
# Exits 77 (skipped) with the reason where the machine does not let the test mount a tmpfs.
# usage: enospc.sh RESAE MPIEXEC OUT_DIR SRC_DIR
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4
py=/usr/bin/python3
data=$src/tests/data/pipeline
dir=$out/pipeline_enospc
mnt=$dir/mnt
fail() { echo "FAIL: $*"; exit 1; }
mpi() { "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$@"; }
make_config() {
  sed -e "s#^run_dir:.*#run_dir: $2#" -e "s#path: model#path: $data/model#" \
      -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" "$data/small.yaml" >"$1"
}
umount "$mnt" 2>/dev/null
rm -rf "$dir"; mkdir -p "$mnt"
if ! err=$(mount -t tmpfs -o size=32m tmpfs "$mnt" 2>&1); then
  echo "SKIP: cannot mount a tmpfs for the disk-full test here: ${err:-mount failed} (needs root and mount rights)"
  exit 77
fi
trap 'umount "$mnt" 2>/dev/null' EXIT

make_config "$dir/ref.yaml" "$dir/ref"
mpi 2 "$resae" run "$dir/ref.yaml" >"$dir/ref.log" 2>&1 || { tail -20 "$dir/ref.log"; fail "reference run"; }
A=$(stat -c %s "$dir/ref/activations.h5")
T=$(du -s -B1 --apparent-size "$dir/ref/tasks" | cut -f1)
R=$(stat -c %s "$dir/ref/results.h5")
echo "reference: activation store $A bytes, task files $T bytes, results.h5 $R bytes"

for stage in harvest train tasks results; do
  case $stage in
  harvest) left=$((A / 2)) ;;
  train) left=$((A + 65536)) ;;
  tasks) left=$((A + T / 2)) ;;
  results) left=$((A + T + R / 2)) ;;
  esac
  umount "$mnt" 2>/dev/null; mount -t tmpfs -o size=32m tmpfs "$mnt" || fail "remounting the tmpfs"
  avail=$(df -B1 --output=avail "$mnt" | tail -1)
  head -c $((avail - left)) /dev/zero >"$mnt/filler" || fail "filling the tmpfs"
  make_config "$dir/$stage.yaml" "$mnt/run"
  mpi 2 "$resae" run "$dir/$stage.yaml" >"$dir/$stage.log" 2>&1 && fail "$stage: the run finished with $left bytes free"
  msg=$(grep -E "^error: " "$dir/$stage.log" | head -3)
  echo "$stage ($left bytes free): $msg" | cut -c1-400
  grep -E "^error: " "$dir/$stage.log" | grep -qi "no space left on device" ||
    { tail -20 "$dir/$stage.log"; fail "$stage: the error does not say 'no space left on device'"; }
  grep -E "^error: " "$dir/$stage.log" | grep -q "$mnt/run/" || fail "$stage: the error names no file of the run directory"
  grep -q "HDF5-DIAG" "$dir/$stage.log" && fail "$stage: HDF5's own error stack reached stderr ($(grep -c HDF5-DIAG "$dir/$stage.log") lines)"
  grep -q "retrying" "$dir/$stage.log" && fail "$stage: a task was retried on a full file system"
  grep -qE "not retried: no space left on device|the file system is full" "$dir/$stage.log" ||
    [ $stage = results ] || fail "$stage: the log does not say the task was not retried because the disk is full"
  rm -f "$mnt/filler"
  mpi 2 "$resae" run "$dir/$stage.yaml" >"$dir/$stage.again.log" 2>&1 ||
    { tail -20 "$dir/$stage.again.log"; fail "$stage: the same command failed after space was freed"; }
  "$py" "$src/tests/run/compare_results.py" "$dir/ref/results.h5" "$mnt/run/results.h5" >"$dir/$stage.cmp" 2>&1 ||
    { cat "$dir/$stage.cmp"; fail "$stage: results after the disk-full run differ from the uninterrupted run"; }
  ls "$mnt/run" "$mnt/run/tasks" | grep -q '\.tmp$' && fail "$stage: a temporary file was left behind after the finished run"
done
echo "disk full in harvest, train, tasks and results: clear errors, then results identical after space was freed"
