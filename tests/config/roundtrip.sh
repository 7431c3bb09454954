#!/usr/bin/env bash
# The resolved config printed by `resae validate` must validate again and resolve to the same
# thing: validate CONFIG > r1.yaml; validate r1.yaml > r2.yaml; r1 and r2 identical, and the
# config hash (printed in the grid section) present.
# Usage: roundtrip.sh RESAE CONFIG OUTDIR
set -u
resae=$1 config=$2 out=$3
mkdir -p "$out" || exit 1
name=$(basename "$config" .yaml)
r1=$out/$name.r1.yaml r2=$out/$name.r2.yaml
"$resae" validate "$config" >"$r1" || { echo "FAIL: $config does not validate"; exit 1; }
"$resae" validate "$r1" >"$r2" || { echo "FAIL: the resolved config $r1 does not validate"; exit 1; }
grep -q '^# config hash: [0-9a-f]\{16\}$' "$r1" || { echo "FAIL: no config hash in $r1"; exit 1; }
grep -q '^name: ' "$r1" || { echo "FAIL: no resolved config in $r1"; exit 1; }
if ! cmp -s "$r1" "$r2"; then
  echo "FAIL: the resolved config does not resolve to itself:"
  diff "$r1" "$r2"
  exit 1
fi
echo "round trip ok: $(grep '^# config hash' "$r1")"
