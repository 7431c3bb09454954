#!/usr/bin/env bash
# Install what is missing, build, run every test through ctest, print the totals.
# Usage: tests/run.sh [--asan] [--valgrind] [--fuzz SECONDS] [-R REGEX] [-L LABEL]
#   --asan      build in build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer, run all tests
#   --valgrind  build in build-valgrind/ and run the serial tests under valgrind (memcheck) only
#               (OpenBLAS with its AVX2 kernels: valgrind cannot execute AVX-512)
#   --fuzz S    install clang, build the fuzz harnesses with libFuzzer + ASan/UBSan in build-fuzz/,
#               run each for S seconds from its seed corpus (tests/fuzz/README.md), print the totals
# Other arguments go to ctest.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../jobs/lib/setup.sh"

asan=0 vg=0 fuzz=0 ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --asan) asan=1 ;;
    --valgrind) vg=1 ;;
    --fuzz) fuzz=${2:-}; shift
      [[ $fuzz =~ ^[0-9]+$ ]] && [ "$fuzz" -gt 0 ] || { echo "error: --fuzz needs a number of seconds, e.g. --fuzz 60" >&2; exit 2; } ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) ctest_args+=("$1") ;;
  esac
  shift
done

pkgs=("${RESAE_BUILD_PKGS[@]}" "${RESAE_PY_PKGS[@]}")
[ $vg = 1 ] && pkgs+=(valgrind)
[ "$fuzz" != 0 ] && pkgs+=(clang)
rs_install_packages "${pkgs[@]}" || exit 1

if [ "$fuzz" != 0 ]; then
  exec bash "$here/fuzz/run_fuzz.sh" "$fuzz"
fi

cmake_args=()
if [ $vg = 1 ]; then
  RESAE_BUILD_DIR=$RESAE_ROOT/build-valgrind
  cmake_args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DRESAE_TEST_CORETYPE_OVERRIDE=Haswell)
elif [ $asan = 1 ]; then
  RESAE_BUILD_DIR=${RESAE_BUILD_DIR%/build}/build-asan
  [ "$RESAE_BUILD_DIR" = "/build-asan" ] && RESAE_BUILD_DIR=$RESAE_ROOT/build-asan
  cmake_args+=(-DRESAE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi
rs_build "${cmake_args[@]}" || exit 1
rs_blas_env

log=$RESAE_BUILD_DIR/ctest.log
start=$(date +%s)
if [ $vg = 1 ]; then
  rs_say "serial tests under valgrind"
  ctest --test-dir "$RESAE_BUILD_DIR" -L serial -T memcheck -j "$RESAE_JOBS" "${ctest_args[@]}" \
    --overwrite MemoryCheckCommandOptions="--leak-check=full --error-exitcode=99 --errors-for-leak-kinds=definite --suppressions=$RESAE_ROOT/tests/valgrind.supp" \
    --output-on-failure 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # valgrind's findings ("Defects: N" per test) fail the run even where the test's own checks passed
  if grep -qE '^ *[0-9]+/[0-9]+ MemCheck: #[0-9]+: .*Defects: [1-9]' "$log"; then
    echo "valgrind found defects (logs in $RESAE_BUILD_DIR/Testing/Temporary/MemoryChecker.*.log):"
    grep -E '^ *[0-9]+/[0-9]+ MemCheck: #[0-9]+: .*Defects: [1-9]' "$log"
    rc=1
  fi
  sed -i 's/MemCheck/Test/' "$log"   # count lines below like ordinary runs
else
  rs_say "running tests"
  ctest --test-dir "$RESAE_BUILD_DIR" --output-on-failure -j "$RESAE_JOBS" "${ctest_args[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
fi

passed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* +Passed' "$log")
# a test that needs what this machine lacks (the bf16 encoder without AVX512_BF16) exits 77: skipped,
# counted apart and named, never as passed or failed
skipped=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*Skipped' "$log")
failed=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(\*\*\*|Failed|Exception|Timeout)' "$log" | grep -cv '\*\*\*Skipped')
echo
echo "resae tests ($(( $(date +%s) - start ))s):"
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped on this machine:" \
    "$(grep -E '\*\*\*Skipped' "$log" | sed -E 's/.*Test +#[0-9]+: ([^ ]+).*/\1/' | tr '\n' ' ')"
else
  echo "$passed passed, $failed failed"
fi
[ "$rc" = 0 ] && [ "$failed" = 0 ] || exit 1
