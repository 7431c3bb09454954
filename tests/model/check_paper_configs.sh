#!/usr/bin/env bash
# Validate configs/NAME.yaml against the real-shape config.json in tests/data/models/NAME (no
# weights needed): a copy with model.path pointed there must validate (exit 0) and imply the grid
# the paper's setting implies (METHOD.md section 1).
# Usage: check_paper_configs.sh RESAE REPO_ROOT NAME OUTDIR
set -u
resae=$1 root=$2 name=$3 out=$4
cfg=$root/configs/$name.yaml
mkdir -p "$out" || exit 1
grep -q "^  path: ../models/$name\$" "$cfg" || { echo "FAIL: $cfg no longer has 'path: ../models/$name'"; exit 1; }
sed "s#^  path: ../models/$name\$#  path: $root/tests/data/models/$name#" "$cfg" >"$out/$name.yaml"
"$resae" validate "$out/$name.yaml" >"$out/$name.resolved.yaml" || { echo "FAIL: $name.yaml does not validate"; exit 1; }
"$resae" validate "$out/$name.resolved.yaml" >"$out/$name.r2.yaml" || { echo "FAIL: the resolved config does not validate"; exit 1; }
cmp -s "$out/$name.resolved.yaml" "$out/$name.r2.yaml" || { echo "FAIL: the resolved config does not resolve to itself"; exit 1; }
case $name in
pythia-1.4b) wants=(
  '^# model: GPTNeoXForCausalLM, 24 layers, hidden_size 2048, vocab 50304$'
  '^#   paper *\[0, 6, 12, 18\]$'
  '^# SAEs to train: 28 (16 raw + 12 resae) for 4 k x 1 seed(s)'
  '^# SAE width n_latents = 8 x 2048 = 16384') ;;
gemma-2-9b) wants=(
  '^# model: Gemma2ForCausalLM, 42 layers, hidden_size 3584, vocab 256000$'
  '^#   gap4 *\[0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40\]$'
  '^#   gap6 *\[0, 6, 12, 18, 24, 30, 36\]$'
  '^#   gap8 *\[0, 8, 16, 24, 32, 40\]$'
  '^# SAE width n_latents = 8 x 3584 = 28672') ;;
*) echo "FAIL: unknown config $name"; exit 1 ;;
esac
status=0
for want in "${wants[@]}" '^  k: \[40, 80, 160, 320\]$' '^  splits: {calibration: 500000,'; do
  grep -q -- "$want" "$out/$name.resolved.yaml" || { echo "FAIL: missing line matching: $want"; status=1; }
done
[ $status = 0 ] && echo "$name.yaml validates: $(grep '^# config hash' "$out/$name.resolved.yaml")"
exit $status
