#!/usr/bin/env bash
# Validate configs/demo.yaml. If the demo model (configs/demo/model/config.json) is present the
# config is validated as it is; otherwise a copy whose model.path points at the test fixture
# (8 layers, hidden 128, vocab 256: the demo model's shape) is validated and its grid checked
# against the counts worked out by hand for that shape.
# Usage: demo.sh RESAE REPO_ROOT FIXTURE_MODEL_DIR OUTDIR
set -u
resae=$1 root=$2 fixture=$3 out=$4
cfg=$root/configs/demo.yaml
mkdir -p "$out" || exit 1
if [ -f "$root/configs/demo/model/config.json" ]; then
  echo "demo model present: validating $cfg as it is"
  "$resae" validate "$cfg" >"$out/demo.resolved.yaml" || exit 1
  grep -q '^#   quarters *\[0, 2, 4, 6\]$' "$out/demo.resolved.yaml" || { echo "FAIL: no quarters set"; exit 1; }
  grep -q '^# SAEs to train: [1-9]' "$out/demo.resolved.yaml" || { echo "FAIL: no SAE count"; exit 1; }
  exit 0
fi
echo "demo model absent: validating a copy that points at $fixture"
grep -q '^  path: demo/model ' "$cfg" || { echo "FAIL: demo.yaml no longer has 'path: demo/model'"; exit 1; }
sed "s#^  path: demo/model #  path: $fixture #" "$cfg" >"$out/demo.yaml"
"$resae" validate "$out/demo.yaml" >"$out/demo.resolved.yaml" || exit 1
status=0
for want in \
  '^#   quarters *\[0, 2, 4, 6\]$' \
  '^#   gap1 *\[0, 1, 2, 3, 4, 5, 6, 7\]$' \
  '^#   gap2 *\[0, 2, 4, 6\]  (same layers as quarters: evaluated once)$' \
  '^#   gap3 *\[0, 3, 6\]$' \
  '^# affine fits: 12 ' \
  '^# regression pairs: 28 ' \
  '^# SAEs to train: 80 (32 raw + 48 resae) for 4 k x 1 seed(s); 152 SAE uses before sharing$' \
  '^# evaluations: 32 (set x variant x k x seed), 24 after merging sets with identical layers$'; do
  grep -q "$want" "$out/demo.resolved.yaml" || { echo "FAIL: missing line matching: $want"; status=1; }
done
exit $status
