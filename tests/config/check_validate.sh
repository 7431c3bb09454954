#!/usr/bin/env bash
# Run `resae validate CONFIG` and check its exit code and that stderr contains every line of
# EXPECT_FILE as a literal substring.
# Usage: check_validate.sh RESAE CONFIG EXPECTED_EXIT EXPECT_FILE
set -u
resae=$1 config=$2 want_rc=$3 expect=$4
err=$("$resae" validate "$config" 2>&1 >/dev/null)
rc=$?
status=0
if [ "$rc" != "$want_rc" ]; then
  echo "FAIL: exit code $rc, expected $want_rc"
  status=1
fi
[ -s "$expect" ] || { echo "FAIL: $expect is empty or missing"; exit 1; }
while IFS= read -r line || [ -n "$line" ]; do
  [ -z "$line" ] && continue
  if ! grep -qF -- "$line" <<<"$err"; then
    echo "FAIL: stderr lacks: $line"
    status=1
  fi
done <"$expect"
echo "stderr was:"
echo "$err"
exit $status
