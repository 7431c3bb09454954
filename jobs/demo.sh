#!/usr/bin/env bash
# The embedded demo, end to end: install what is missing, build, run configs/demo.yaml on 2 ranks
# (a byte-level GPT-NeoX trained on Python's standard library, shipped in configs/demo/), then print
# the run's status, its tables, and where the results, figures and exported SAEs are.
# Run it again to continue an interrupted demo (finished work is kept); RESAE_DEMO_FRESH=1 starts over.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/setup.sh"
rs_install_packages "${RESAE_BUILD_PKGS[@]}" "${RESAE_PY_PKGS[@]}" python3-matplotlib
rs_build
rs_blas_env
rs_mpi_env
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

resae=$RESAE_BUILD_DIR/resae
config=$RESAE_ROOT/configs/demo.yaml
run_dir=$RESAE_ROOT/runs/demo
[ "${RESAE_DEMO_FRESH:-0}" = 1 ] && rm -rf "$run_dir"

rs_say "stages: harvest -> affine maps (+ cross-layer regression) -> SAE training (raw, resae) -> evaluation (EV, redundancy, CE splices, affine-only control) + sparse probing + TPP -> results"
"$resae" validate -q "$config"
rs_say "running the demo on 2 ranks (log: $run_dir.log)"
mkdir -p "$(dirname "$run_dir")"
start=$(date +%s)
set +e
mpirun -n 2 --bind-to none "$resae" run "$config" 2>&1 | tee "$run_dir.log" | grep -E "stage |affine [0-9]|sae |probe |tpp |ERROR|WARN|error" 
rc=${PIPESTATUS[0]}
set -e
rs_say "resae run exited $rc after $(( $(date +%s) - start ))s"
"$resae" status "$run_dir" || true
[ "$rc" = 0 ] || { echo "error: the demo run failed (exit $rc); see $run_dir.log" >&2; exit "$rc"; }
/usr/bin/python3 "$RESAE_ROOT/analysis/report.py" "$run_dir"
echo
rs_say "results: $run_dir/results.h5 (layout: docs/store.md; read with h5py)"
rs_say "figures (analysis/figures.py; PNG and PDF):"
/usr/bin/python3 "$RESAE_ROOT/analysis/figures.py" "$run_dir" --out "$run_dir/figures"
for fmt in saelens sparsify; do
  "$resae" export "$run_dir" --format "$fmt" "$run_dir/export/$fmt" | sed 's/^/==> /'
done
rs_say "SAELens: SAE.load_from_disk(\"$run_dir/export/saelens/raw_L2_k8_s0\"); how to feed the ReSAE SAEs: docs/export.md"
