#!/usr/bin/env bash
# Run a command; require its exit code, and (unless empty) a literal substring of its output
# (stdout and stderr together; "-" for none). With WANT_EMPTY_STDOUT=1 also require an empty stdout.
# Usage: expect_exit.sh EXIT_CODE SUBSTRING COMMAND [ARGS...]
set -u
want=$1 sub=$2
shift 2
outf=$(mktemp) errf=$(mktemp)
"$@" >"$outf" 2>"$errf"
rc=$?
status=0
[ "$rc" = "$want" ] || { echo "FAIL: exit code $rc, expected $want"; status=1; }
if [ "$sub" != "-" ] && ! cat "$outf" "$errf" | grep -qF -- "$sub"; then
  echo "FAIL: output lacks: $sub"
  status=1
fi
if [ "${WANT_EMPTY_STDOUT:-0}" = 1 ] && [ -s "$outf" ]; then
  echo "FAIL: stdout is not empty"
  status=1
fi
cat "$outf" "$errf" | head -20
rm -f "$outf" "$errf"
exit $status
