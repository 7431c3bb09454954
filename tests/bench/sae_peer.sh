#!/usr/bin/env bash
# TopK SAE training step: resae's C trainer against a public peer implementation, EleutherAI's
# sparsify (its own SparseCoder, forward, loss, decoder-norm handling, Adam/lr rule and dead-latent
# tracking as its Trainer does them; CPU, float32; see sae_peer.py for the exact recipe and where
# it departs from sparsify's defaults), same machine, same thread count, same data (the C side's
# synthetic pool, consecutive rows cycled, the same batches in the same order), same number of
# steps, so both see the same tokens. Each side uses its own initialisation and recipe (resae:
# rs_sae_config_default with warm-up steps/10; sparsify: see sae_peer.py).
#   tests/bench/sae_peer.sh [BUILD_DIR] [--shape D,N,K,BATCH]... [--steps S] [--threads T]...
#                           [--init own|resae] [--encoder-precision fp32|bf16]
# --init own (the default): each side its own initialisation and recipe, as described above.
# --init resae: the peer starts from resae's initial parameters and follows resae's Adam eps and lr
# schedule (sae_peer.py says exactly what changes); both sides then train the same model from the
# same point, so their FVU at the end must agree (the script checks 2% relative) and the tokens/s
# ratio is at equal FVU.
# --encoder-precision bf16: resae's encoder product in bf16 (train.encoder_precision; needs
# AVX512_BF16 and oneDNN, else resae's run fails with the reason); the peer stays float32.
# Defaults: BUILD_DIR = build; shapes 512,8192,64,4096 and the paper's 2048,32768,160,1024 (batch
# 1024 keeps a sparsify step near 5 s and a resae step near 1.5 s on one core; 4096 would take
# ~20 s per sparsify step); 20 steps; threads 1 and 2. --shape / --threads given replace the defaults.
# The peer source is fetched at run time, never vendored: $SPARSIFY_DIR (a checkout) if set, else
# `git clone --depth 1 https://github.com/EleutherAI/sparsify` into the temp dir (exit 77 if that
# fails). Its commit is printed.
# Prints, per shape and thread count: tokens/s (wall, steps after the first 2) of each side and
# the ratio resae/sparsify; the same per CPU second of the process (all threads; the steadier
# number when the machine is shared); the final FVU of each side (mean over the last steps/10
# steps of sum ||x - x_hat||^2 / sum ||x - mean_batch(x)||^2, the same definition on both sides)
# after the same tokens; and each side's step time / the wall time of its own standalone encoder
# product (x @ W_enc^T at the batch shape, timed in the same process just before training).
# Exits non-zero if any run of either side fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../../build
shapes=() threads_list=() steps=20 init=own prec=fp32
while [ $# -gt 0 ]; do
    case $1 in
        --shape) shapes+=("$2"); shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --encoder-precision) prec=$2; shift 2 ;;
        --init) init=$2; shift 2
                [ "$init" = own ] || [ "$init" = resae ] || { echo "--init: own or resae, not '$init'" >&2; exit 2; } ;;
        --threads) IFS=, read -ra t <<<"$2"; threads_list+=("${t[@]}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --*) echo "unknown option $1" >&2; exit 2 ;;
        *) build=$1; shift ;;
    esac
done
[ ${#shapes[@]} -gt 0 ] || shapes=(512,8192,64,4096 2048,32768,160,1024)
[ ${#threads_list[@]} -gt 0 ] || threads_list=(1 2)
bench=$build/tests/bench/sae_bench
[ -x "$bench" ] || { echo "sae_peer.sh: $bench not found; build it (make sae_bench) or pass BUILD_DIR" >&2; exit 1; }
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(RESAE_NO_BLAS_GUARD=1 "$build/resae" version | sed -n 's/^cpu: .*best OpenBLAS kernel set: \([A-Za-z]*\).*/\1/p')}
out=$(mktemp -d /tmp/sae_peer.XXXXXX)
trap 'rm -rf "$out"' EXIT

if [ -z "${SPARSIFY_DIR:-}" ]; then
    if ! git clone -q --depth 1 https://github.com/EleutherAI/sparsify "$out/sparsify" >&2; then
        echo "sae_peer.sh: could not clone https://github.com/EleutherAI/sparsify; set SPARSIFY_DIR to a checkout" >&2
        exit 77
    fi
    SPARSIFY_DIR=$out/sparsify
fi
[ -f "$SPARSIFY_DIR/sparsify/sparse_coder.py" ] || { echo "sae_peer.sh: $SPARSIFY_DIR is not a sparsify checkout; set SPARSIFY_DIR" >&2; exit 77; }
peer_commit=$(git -C "$SPARSIFY_DIR" log -1 --format='%H (%cd)' --date=short 2>/dev/null || echo unknown)
echo "peer: EleutherAI/sparsify at $SPARSIFY_DIR, commit $peer_commit"
echo "resae: $bench; OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE; $steps steps per run; initialisation: $init; resae encoder product: $prec"

get() { sed -n "s/^$2 //p" "$1"; }
rows=() fail=0
for shape in "${shapes[@]}"; do
    IFS=, read -r d n k batch <<<"$shape"
    pool=$((steps * batch)) cap=$((2000000000 / (4 * d)))
    [ $pool -le $cap ] || pool=$cap
    [ $pool -ge $batch ] || pool=$batch
    for threads in "${threads_list[@]}"; do
        export OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
        run=$out/run
        rm -rf "$run" && mkdir "$run"
        echo "== d=$d n=$n k=$k batch=$batch, $threads thread(s): resae (pool $pool rows)"
        if ! "$bench" "$run" --d "$d" --n "$n" --k "$k" --batch "$batch" --steps "$steps" --pool "$pool" --write --encoder-precision "$prec" | tee "$run/c_stdout.txt"; then
            echo "resae run failed" >&2; fail=1; continue
        fi
        echo "== d=$d n=$n k=$k batch=$batch, $threads thread(s): sparsify"
        [ "$init" = resae ] || rm -f "$run/init.f32"
        if ! /usr/bin/python3 "$here/sae_peer.py" "$run" "$d" "$n" "$k" "$batch" "$steps" "$threads" "$SPARSIFY_DIR" "$init"; then
            echo "sparsify run failed" >&2; fail=1; continue
        fi
        c=$run/c_result.txt p=$run/peer_result.txt
        if [ "$init" = resae ] && ! awk -v a="$(get "$c" fvu)" -v b="$(get "$p" fvu)" 'BEGIN { r = a / b; exit !(r > 0.98 && r < 1.02) }'; then
            echo "sae_peer.sh: from the same initialisation the final FVU differs by more than 2%: resae $(get "$c" fvu), sparsify $(get "$p" fvu)" >&2
            fail=1
        fi
        c_gw=$(sed -n 's/^standalone SGEMM .*(\([0-9.]*\) by wall time).*/\1/p' "$run/c_stdout.txt")
        rows+=("$(awk -v d="$d" -v n="$n" -v k="$k" -v b="$batch" -v t="$threads" -v s="$steps" \
            -v ct="$(get "$c" tokens_per_s)" -v pt="$(get "$p" tokens_per_s)" \
            -v cc="$(get "$c" tokens_per_cpu_s)" -v pc="$(get "$p" tokens_per_cpu_s)" \
            -v cf="$(get "$c" fvu)" -v pf="$(get "$p" fvu)" -v cgw="$c_gw" \
            -v pgw="$(get "$p" gemm_wall_s)" -v csg="$(get "$c" step_over_gemm)" 'BEGIN {
              cg = 2 * b * n * d / (cgw * 1e9); cs = b / ct; ps = b / pt;
              printf "%-22s %3d %8.0f %8.0f %7.2fx %8.0f %8.0f %7.2fx %9d %8.4f %8.4f %7.2fx %7.2fx %7.2fx",
                d "," n "," k "," b, t, ct, pt, ct / pt, cc, pc, cc / pc, s * b, cf, pf, cs / cg, ps / pgw, csg }')")
    done
done

echo
echo "== result: resae vs EleutherAI/sparsify $peer_commit, $steps steps per run, initialisation $init, resae encoder $prec"
printf "%-22s %3s %8s %8s %8s %8s %8s %8s %9s %8s %8s %8s %8s %9s\n" "" "" "tok/s" "" "" "tok/cpu-s" "" "" \
    "tokens" "FVU" "" "step/GEMM" "" "(in-step)"
printf "%-22s %3s %8s %8s %8s %8s %8s %8s %9s %8s %8s %8s %8s %8s\n" "d,n,k,batch" "thr" "resae" "sparsify" "ratio" \
    "resae" "sparsify" "ratio" "" "resae" "sparsify" "resae" "sparsify" "resae"
for r in "${rows[@]}"; do echo "$r"; done
echo "ratio = resae / sparsify. tok/cpu-s = tokens per second of process CPU time (all threads)."
echo "step/GEMM = a step's wall time / the wall time of the same side's standalone encoder product"
echo "x @ W_enc^T at the batch shape; (in-step) = resae's step / its in-step encoder GEMM by the"
echo "main thread's CPU time (from sae_bench; meaningful with 1 thread only)."
[ $fail -eq 0 ] || { echo "sae_peer.sh: at least one run failed" >&2; exit 1; }
