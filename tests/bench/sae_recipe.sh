#!/usr/bin/env bash
# The SAE training recipe study (docs/sae.md, "Recipe"): final held-out FVU and dead fractions of
# each recipe on the demo's real activations (raw and residualized streams of several layers) and
# on a known-dictionary synthetic stream, at fractions of the demo's training budget.
#   tests/bench/sae_recipe.sh [BUILD_DIR] [RUN_DIR] [OUT_DIR]
# RUN_DIR is a finished (at least --until affine) run of configs/demo.yaml (default: runs/demo, as
# jobs/demo.sh leaves it); its activations are extracted once into OUT_DIR (default /tmp/sae_recipe).
# RECIPES (a file of "name budgets options" lines, budgets a comma list of divisors of the 2.38M
# tokens) and KS ("3 8 20") override what runs; JOBS (default 2)
# runs that many trainings at once (each single-threaded; the study counts tokens, not seconds).
# Prints one table per budget: rows dataset x k, columns recipe (FVU on the eval split, the fraction
# of latents that never fire on it, and the fraction dead at the end of training: inactive for the
# last dead_tokens training tokens), then per recipe the mean FVU ratio to the baseline ("today":
# the recipe before the study, at the full budget) and the worst dead fractions (eval / training).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/demo_streams.sh" "$@"

full=2380000   # configs/demo.yaml train.tokens before the study
if [ -n "${RECIPES:-}" ]; then recipes=$(cat "$RECIPES"); else recipes=$(cat <<'EOF'
today      1      --batch 1024 --lr 0.004 --warmup 100 --enc-init tied --dead-tokens 238000
b1024      2,4    --batch 1024 --lr 0.004 --warmup 100 --enc-init tied
b512       2      --batch 512 --lr 0.008 --warmup 100 --enc-init tied
b512-dt    2,4    --batch 512 --lr 0.008 --warmup 100 --enc-init tied --dead-tokens DT100
data       1,2,4  --batch 512 --lr 0.008 --warmup 100 --enc-init data --dead-tokens DT100
openai     2,4    --batch 512 --lr 0.008 --warmup 100 --enc-init openai --dead-tokens DT100
sparsify   2,4    --batch 512 --lr 0.008 --warmup 100 --enc-init sparsify --dead-tokens DT100
aux-input  2      --batch 512 --lr 0.008 --warmup 100 --enc-init data --dead-tokens DT100 --aux-norm input
no-auxk    2      --batch 512 --lr 0.008 --warmup 100 --enc-init data --dead-tokens DT100 --alpha-aux 0
warm20     2      --batch 512 --lr 0.008 --warmup 20 --enc-init data --dead-tokens DT100
warm400    2      --batch 512 --lr 0.008 --warmup 400 --enc-init data --dead-tokens DT100
bdec-mean  2      --batch 512 --lr 0.008 --warmup 100 --enc-init data --dead-tokens DT100 --bdec mean
bdec-zero  2      --batch 512 --lr 0.008 --warmup 100 --enc-init data --dead-tokens DT100 --bdec zero
lr004      2,4    --batch 512 --lr 0.004 --warmup 100 --enc-init data --dead-tokens DT100
dt50       2      --batch 512 --lr 0.008 --warmup 100 --enc-init data --dead-tokens DT50
EOF
); fi
budgets="2 1 4"   # full / 2 (the target), full / 1, full / 4

# the work list: budget divisor, recipe, stream, k (synthetic: 128-d, 512 atoms, 4 active, an SAE of
# 512 latents; k 4 and 8)
list=$out/work.txt
: >"$list"
for b in $budgets; do
  tokens=$(( full / b ))
  while read -r name rb opts; do
    [ -n "$name" ] || continue
    [[ ",$rb," == *",$b,"* ]] || continue
    opts=${opts//DT100/$(( tokens / 100 ))}
    opts=${opts//DT50/$(( tokens / 50 ))}
    opts=${opts//DT200/$(( tokens / 200 ))}
    # a result counts only for the settings that produced it: a recipe whose options changed reruns
    sig=$(printf '%s' "$tokens $opts" | cksum | cut -d' ' -f1)
    for s in $streams; do
      for k in $ks; do echo "$b $name $s $k $tokens $sig $opts" >>"$list"; done
    done
    for k in 4 8; do echo "$b $name synth $k $tokens $sig $opts" >>"$list"; done
  done <<<"$recipes"
done
# results are kept: a second call runs only what is missing (remove $out/results.txt to redo)
touch "$out/results.txt"
sed -i '/FAILED/d' "$out/results.txt"
todo=$out/todo.txt
awk 'FILENAME == ARGV[1] { done[$1 " " $2 " " $3 " " $4 " " $5] = 1; next } { split($3, s, ":"); if (!((($1 " " $2 " " s[1] " " $4 " " $6)) in done)) print }' \
  "$out/results.txt" "$list" >"$todo"
echo "== $(wc -l <"$list") trainings, $(wc -l <"$todo") to run ($jobs at a time), results in $out/results.txt"
one() {
  set -- $1
  local b=$1 name=$2 s=${3%%:*} k=$4 tokens=$5 sig=$6; shift 6
  local key="$b $name $s $k $sig" src="$out/$s" n=256
  [ "$s" = synth ] && src="--synth 128 512 4" n=512
  local f
  f=$("$bin" $src --n $n --k "$k" --tokens "$tokens" --points 10 "$@" 2>/dev/null | sed -n 's/^final //p') ||
    { echo "$key FAILED" ; return 0; }
  echo "$key $f"
}
export -f one
export bin out
xargs -P "$jobs" -I{} bash -c 'one "$@"' _ {} <"$todo" >>"$out/results.txt"
if grep -q FAILED "$out/results.txt"; then grep FAILED "$out/results.txt" >&2; echo "error: trainings failed" >&2; exit 1; fi

# tables: FVU_eval / dead_eval per (stream, k) x recipe, and per recipe the mean ratio to today;
# only lines of this call's list with its settings count (the last one where a key repeats)
awk -v recipes="$(echo "$recipes" | awk '{print $1}' | tr '\n' ' ')" '
  FILENAME == ARGV[1] { split($3, sp, ":"); want[$1 " " $2 " " sp[1] " " $4 " " $6] = 1; next }
  !(($1 " " $2 " " $3 " " $4 " " $5) in want) { next }
  { delete v; for (i = 6; i < NF; i += 2) v[$(i)] = $(i + 1)
    key = $3 " k=" $4; fvu[$1, $2, key] = v["fvu_eval"]; dead[$1, $2, key] = v["dead_eval"]
    dtr[$1, $2, key] = v["dead_train"]
    if (v["recovered"] != "") rec[$1, $2, key] = v["recovered"]
    if (!(key in seen)) { seen[key] = 1; keys[nk++] = key }
    if (!($1 in bs)) { bs[$1] = 1; blist[nb++] = $1 } }
  END {
    nr = split(recipes, r, " ")
    for (bi = 0; bi < nb; bi++) {
      b = blist[bi]
      printf "\n== budget: %d tokens (1/%d of the demo'"'"'s 2.38M); FVU on eval / latents dead on eval / dead at the end of training\n%-16s", 2380000 / b, b, "stream"
      for (j = 1; j <= nr; j++) if ((b, r[j], keys[0]) in fvu) printf " %22s", r[j]
      printf "\n"
      for (q = 0; q < nk; q++) {
        printf "%-16s", keys[q]
        for (j = 1; j <= nr; j++) if ((b, r[j], keys[0]) in fvu) printf " %8.4f/%5.1f%%/%5.1f%%", fvu[b, r[j], keys[q]], 100 * dead[b, r[j], keys[q]], 100 * dtr[b, r[j], keys[q]]
        printf "\n"
      }
      printf "%-16s", "FVU / today"
      for (j = 1; j <= nr; j++) if ((b, r[j], keys[0]) in fvu) {
        s = 0; miss = 0
        for (q = 0; q < nk; q++) if ((1, "today", keys[q]) in fvu) s += log(fvu[b, r[j], keys[q]] / fvu[1, "today", keys[q]]); else miss = 1
        if (miss) printf " %22s", "(no today)"; else printf " %22.3f", exp(s / nk) }
      printf "  (geometric mean)\n%-16s", "worst dead"
      for (j = 1; j <= nr; j++) if ((b, r[j], keys[0]) in fvu) {
        w = 0; wt = 0
        for (q = 0; q < nk; q++) { if (dead[b, r[j], keys[q]] > w) w = dead[b, r[j], keys[q]]; if (dtr[b, r[j], keys[q]] > wt) wt = dtr[b, r[j], keys[q]] }
        printf " %14.1f%%/%5.1f%%", 100 * w, 100 * wt }
      printf "  (eval / training)\n%-16s", "mean dead"
      for (j = 1; j <= nr; j++) if ((b, r[j], keys[0]) in fvu) {
        m = 0; c = 0
        for (q = 0; q < nk; q++) if (keys[q] !~ /^synth/) { m += dead[b, r[j], keys[q]]; c++ }
        printf " %21.2f%%", 100 * m / c }
      printf "  (eval, over the real streams)\n%-16s", "synth recovered"
      for (j = 1; j <= nr; j++) if ((b, r[j], keys[0]) in fvu) printf " %10.2f %10.2f", rec[b, r[j], "synth k=4"], rec[b, r[j], "synth k=8"]
      printf "  (k=4 k=8: true atoms with a decoder row at cosine > 0.9)\n"
    } }' "$list" "$out/results.txt"
