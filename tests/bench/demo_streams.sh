# Sourced by sae_recipe.sh and sae_flatness.sh: their shared arguments, and the demo's SAE input
# streams extracted once from a finished run.
#   . demo_streams.sh [BUILD_DIR] [RUN_DIR] [OUT_DIR]
# Sets here, build, run, out, jobs (JOBS, default 2), ks (KS, default "3 8 20"), bin (the
# sae_recipe program) and streams (name:layer[:predecessor]; resae: the residual after the affine
# map from the predecessor), and writes OUT_DIR/<name>/ with sae_recipe_data.py where missing.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/../../build}
run=${2:-$here/../../runs/demo}
out=${3:-/tmp/sae_recipe}
jobs=${JOBS:-2}
ks=${KS:-3 8 20}
bin=$build/tests/bench/sae_recipe
[ -x "$bin" ] || { echo "error: $bin not built (cmake --build $build --target sae_recipe)" >&2; exit 1; }
[ -f "$run/activations.h5" ] || { echo "error: no $run/activations.h5; run jobs/demo.sh (or resae run --until affine configs/demo.yaml) first" >&2; exit 1; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p "$out"
streams="raw_L0:0 raw_L2:2 raw_L4:4 resae_L1:1:0 resae_L2:2:0 resae_L4:4:2"
for s in $streams; do
  IFS=: read -r name layer pred <<<"$s"
  [ -f "$out/$name/shape.txt" ] || /usr/bin/python3 "$here/sae_recipe_data.py" "$run" "$out/$name" "$layer" $pred
done
