#!/usr/bin/env bash
# The BLAS guard end to end through `resae version`, in every case, on whatever CPU this is: what is
# expected follows from the CPU level resae reports (never from the vendor or a spelling of a name).
# usage: guard_cases.sh RESAE_BINARY BLAS_FAULT_SHIM.so
set -uo pipefail
resae=$1 shim=$2
fails=0 n=0
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
fail() { echo "FAIL: $*"; sed 's/^/  stdout: /' "$out"; sed 's/^/  stderr: /' "$err"; fails=$((fails + 1)); }

# run ENV... -- expect exit code, count of "warning:" lines; the rest are checks on the output
case_run() {
  local name=$1 want_rc=$2 want_warn=$3; shift 3
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  n=$((n + 1))
  env -u OPENBLAS_CORETYPE -u RESAE_ALLOW_GENERIC_BLAS -u RESAE_NO_BLAS_GUARD -u RESAE_TEST_CPU_ISA "${envs[@]}" "$resae" version >"$out" 2>"$err"
  local rc=$? warn
  warn=$(grep -c '^warning:' "$err")
  [ "$rc" = "$want_rc" ] || { fail "$name: exit $rc, expected $want_rc"; return; }
  [ "$warn" = "$want_warn" ] || { fail "$name: $warn warning line(s), expected $want_warn"; return; }
  local pat
  for pat in "$@"; do
    grep -qiE -- "$pat" "$out" "$err" || { fail "$name: output lacks /$pat/"; return; }
  done
  echo "ok: $name"
}

level=$(env -u OPENBLAS_CORETYPE -u RESAE_TEST_CPU_ISA RESAE_NO_BLAS_GUARD=1 "$resae" version | sed -n 's/^cpu: \([^ ]*\) .*/\1/p')
best=$(env -u OPENBLAS_CORETYPE -u RESAE_TEST_CPU_ISA RESAE_NO_BLAS_GUARD=1 "$resae" version | sed -n 's/^cpu: .*best OpenBLAS kernel set: \([A-Za-z]*\).*/\1/p')
echo "CPU level $level, best kernel set $best"
[ -n "$level" ] && [ -n "$best" ] || { echo "FAIL: resae version does not report the CPU level"; exit 1; }
wide=0; [ "$level" = AVX2 ] || [ "$level" = AVX-512 ] && wide=1

# 1. unset: the kernels OpenBLAS detects (or the guard's re-exec); the self-test passed
native=$(env -u OPENBLAS_CORETYPE -u RESAE_TEST_CPU_ISA "$resae" version 2>/dev/null | sed -n 's/.*kernels \([A-Za-z]*\), CPU \([A-Za-z0-9-]*\).*/\1 \2/p')
if [ "${native% *}" = "${native#* }" ]; then nw=0; else nw=1; fi
case_run "unset" 0 $nw -- "self-test passed" "native detection|resae set OPENBLAS_CORETYPE"
# ... and OpenBLAS's misdetection (a generic set reported while the variable is unset) is re-executed away
if [ $wide = 1 ]; then
  case_run "unset, misdetected as Prescott: re-exec" 0 0 LD_PRELOAD="$shim" RESAE_TEST_BLAS_CORENAME=Prescott \
    ASAN_OPTIONS=verify_asan_link_order=0 -- "resae set OPENBLAS_CORETYPE=$best" "kernels $best"
fi

# 2. a user's SIMD set: respected; one warning naming the faster set where the CPU is wider
for spell in Haswell haswell HASWELL; do
  if [ "$level" = AVX-512 ]; then
    case_run "user $spell on AVX-512" 0 1 OPENBLAS_CORETYPE=$spell -- "user OPENBLAS_CORETYPE=$spell" \
      "warning: .*'Haswell' kernels.*OPENBLAS_CORETYPE=SkylakeX would make SGEMM about [0-9.]+x faster.*your setting" \
      "kernels Haswell"
  elif [ "$level" = AVX2 ]; then
    case_run "user $spell on AVX2" 0 0 OPENBLAS_CORETYPE=$spell -- "kernels Haswell"
  fi
done
if [ "$level" = AVX-512 ]; then
  for spell in SkylakeX skylakex SKYLAKEX; do
    case_run "user $spell on AVX-512" 0 0 OPENBLAS_CORETYPE=$spell -- "kernels SkylakeX" "user OPENBLAS_CORETYPE=$spell"
  done
fi

# 3. a user's generic set on a wider CPU: refused, naming the set and the fix; allowed explicitly
if [ $wide = 1 ]; then
  for spell in Prescott prescott; do
    case_run "user $spell refused" 1 0 OPENBLAS_CORETYPE=$spell -- \
      "error: OpenBLAS runs its generic 'Prescott' kernels.*Fix: set OPENBLAS_CORETYPE=$best.*RESAE_ALLOW_GENERIC_BLAS=1"
  done
  sw=0; [ "$level" = AVX-512 ] && sw=1
  case_run "user Sandybridge (AVX) respected" 0 $sw OPENBLAS_CORETYPE=Sandybridge -- "kernels Sandybridge"
  case_run "user Prescott allowed" 0 1 OPENBLAS_CORETYPE=Prescott RESAE_ALLOW_GENERIC_BLAS=1 -- \
    "kernels Prescott" "allowed by RESAE_ALLOW_GENERIC_BLAS=1" "generic SSE kernels allowed"
fi

# 3b. a preset above the CPU (a site's SkylakeX on an AVX2 node): re-executed with the CPU's best set and
# one warning that names the variable and the value replaced. On an AVX-512 CPU, RESAE_TEST_CPU_ISA=AVX2
# stands for the narrower CPU (the AVX-512 kernels then run, but the guard decides as on AVX2).
if [ "$level" = AVX2 ] || [ "$level" = AVX-512 ]; then
  cap=(); [ "$level" = AVX-512 ] && cap=(RESAE_TEST_CPU_ISA=AVX2)
  for spell in SkylakeX skylakex Cooperlake; do
    case_run "user $spell above an AVX2 CPU: re-exec" 0 1 OPENBLAS_CORETYPE=$spell "${cap[@]}" -- \
      "warning: OPENBLAS_CORETYPE=$spell \(set before resae started\) selects AVX-512 kernels, which this CPU \(AVX2\) cannot run" \
      "re-executed itself with OPENBLAS_CORETYPE=Haswell" "kernels Haswell" \
      "resae set OPENBLAS_CORETYPE=Haswell in place of OPENBLAS_CORETYPE=$spell" "self-test passed"
  done
  # the same under mpirun: every rank re-execs, rank 0 alone warns
  if command -v mpirun >/dev/null; then
    n=$((n + 1))
    env -u RESAE_NO_BLAS_GUARD -u RESAE_TEST_CPU_ISA OPENBLAS_CORETYPE=SkylakeX "${cap[@]}" mpirun --oversubscribe --bind-to none \
      -np 2 "$resae" version >"$out" 2>"$err"
    rc=$?
    if [ $rc = 0 ] && [ "$(grep -c '^warning: OPENBLAS_CORETYPE=SkylakeX' "$err")" = 1 ] &&
      [ "$(grep -c 'kernels Haswell \[resae set' "$out")" = 2 ]; then echo "ok: SkylakeX above the CPU, 2 ranks"
    else fail "SkylakeX above the CPU, 2 ranks: exit $rc, expected 0, one warning and two ranks on Haswell"; fi
  fi
fi

# 4. unknown names: one the user gives (OpenBLAS ignores it), one OpenBLAS reports
case_run "user unknown name" 0 1 OPENBLAS_CORETYPE=Frobnicator -- \
  "warning: OPENBLAS_CORETYPE=Frobnicator names no OpenBLAS kernel set" "self-test passed"
if [ "$level" = AVX-512 ]; then # ... and the set OpenBLAS detects instead is above a (stand-in) AVX2 CPU
  case_run "user unknown name, detection above the CPU" 0 1 OPENBLAS_CORETYPE=Frobnicator RESAE_TEST_CPU_ISA=AVX2 -- \
    "warning: OPENBLAS_CORETYPE=Frobnicator names no OpenBLAS kernel set, and the set OpenBLAS detected instead uses instructions this CPU \\(AVX2\\) cannot run" \
    "kernels Haswell"
fi
case_run "unknown kernel set" 0 1 LD_PRELOAD="$shim" RESAE_TEST_BLAS_CORENAME=Futurelake \
  ASAN_OPTIONS=verify_asan_link_order=0 -- "warning: .*kernel set named 'Futurelake'" "kernels Futurelake"

# 5. wrong results: each routine's fault is caught by the self-test and refused with the fix
for r in sgemm:SGEMM dgemm:DGEMM dsyrk:DSYRK dposv:DPOSV; do
  case_run "wrong ${r#*:} refused" 1 0 LD_PRELOAD="$shim" RESAE_TEST_BLAS_FAULT=${r%:*} \
    ASAN_OPTIONS=verify_asan_link_order=0 -- "error: the BLAS self-test failed: ${r#*:}.*OpenBLAS's '[A-Za-z]+' kernels.*Fix: choose another kernel set, e.g. OPENBLAS_CORETYPE="
done
# ... and skipped on request
case_run "guard off" 0 0 LD_PRELOAD="$shim" RESAE_TEST_BLAS_FAULT=sgemm RESAE_NO_BLAS_GUARD=1 \
  ASAN_OPTIONS=verify_asan_link_order=0 -- "disabled \(RESAE_NO_BLAS_GUARD=1\)"

# 6. the bookkeeping commands do not repeat the warning (resae run and resae version give it)
if [ "$level" = AVX-512 ]; then
  n=$((n + 1))
  env -u RESAE_TEST_CPU_ISA OPENBLAS_CORETYPE=Haswell "$resae" validate --keys >"$out" 2>"$err"
  if [ "$(grep -c '^warning:' "$err")" = 0 ] && grep -q 'adam.beta1' "$out"; then echo "ok: validate quiet"
  else fail "validate --keys with a user SIMD set: expected no warning"; fi
fi

echo "blas guard cases: $((n - fails)) passed, $fails failed"
[ $fails = 0 ]
