#!/usr/bin/env bash
# tests/run.sh --fuzz SECONDS: build the harnesses with clang's libFuzzer (and ASan/UBSan) in
# build-fuzz/, run each for SECONDS from a work copy of its seed corpus, print inputs, seconds and
# crashes per harness and in all. A crash leaves its input in build-fuzz/fuzz-crashes/ (replay it
# with the harness binary and that file as argument). Exits 1 on any crash, leak or sanitizer report.
set -uo pipefail
secs=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../../jobs/lib/setup.sh"
bd=$RESAE_ROOT/build-fuzz
rs_say "configuring the fuzz build in $bd (clang, libFuzzer, ASan, UBSan)"
CC=clang cmake -S "$RESAE_ROOT" -B "$bd" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRESAE_FUZZ=ON >"$bd.configure.log" 2>&1 ||
  { cat "$bd.configure.log" >&2; echo "error: cmake configure of the fuzz build failed" >&2; exit 1; }
targets=$(cut -d' ' -f2 "$bd/fuzz_targets.txt" | xargs -n1 basename | tr '\n' ' ')
rs_say "building $targets"
# shellcheck disable=SC2086
cmake --build "$bd" -j "$RESAE_JOBS" --target $targets >"$bd.build.log" 2>&1 ||
  { tail -40 "$bd.build.log" >&2; echo "error: building the fuzz harnesses failed (log: $bd.build.log)" >&2; exit 1; }
mkdir -p "$bd/fuzz-crashes"
# tests/lsan.supp as in the suite: HDF5 leaks a header it failed to load from a damaged file (the task
# file harness damages files on purpose), Open MPI keeps allocations until exit
export OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$RESAE_ROOT/tests/lsan.supp:print_suppressions=0
total_in=0 total_crash=0 n=0
printf '%-14s %12s %8s %8s\n' harness inputs seconds crashes
while read -r name bin seeds; do
  [ -n "$name" ] || continue
  corpus=$bd/fuzz-corpus/$name
  rm -rf "$corpus"; mkdir -p "$corpus"
  IFS=, read -ra list <<<"$seeds"
  for s in "${list[@]}"; do
    if [ -d "$s" ]; then find "$s" -maxdepth 1 -type f -exec cp {} "$corpus/" \; ; else cp "$s" "$corpus/"; fi
  done
  log=$bd/fuzz-$name.log
  t0=$(date +%s)
  "$bin" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=20 \
    -artifact_prefix="$bd/fuzz-crashes/$name-" "$corpus" >"$log" 2>&1
  rc=$?
  t1=$(date +%s)
  inputs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crash=0; [ $rc = 0 ] || crash=1
  printf '%-14s %12s %8s %8s\n' "$name" "${inputs:-?}" $((t1 - t0)) $crash
  [ $crash = 0 ] || { grep -E 'ERROR|SUMMARY|==[0-9]+==' "$log" | head -5; echo "  (log: $log)"; }
  total_in=$((total_in + ${inputs:-0})); total_crash=$((total_crash + crash)); n=$((n + 1))
done <"$bd/fuzz_targets.txt"
echo
echo "fuzzing: $n harnesses, $total_in inputs, $secs s each, $total_crash crashing"
[ $total_crash = 0 ]
