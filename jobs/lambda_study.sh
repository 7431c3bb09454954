#!/usr/bin/env bash
# Ridge-strength study: run a config once per affine.lambda_rel on 2 ranks (or RESAE_RANKS) in one run
# directory, keep results.h5 of each as results_lambda_<value>.h5, then tabulate them with
# analysis/lambda_study.py. Work that does not depend on lambda (the harvest, raw SAEs and their
# evaluations) is done once: task files are named by their identity hashes.
# usage: jobs/lambda_study.sh [CONFIG] [LAMBDA ...]
#   CONFIG  default configs/demo-lambda.yaml (it must have a line `  lambda_rel: VALUE` under affine:)
#   LAMBDA  default 1e-4 1e-2 1e-1 1
# Run it again to continue: finished tasks are kept.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/setup.sh"
rs_install_packages "${RESAE_BUILD_PKGS[@]}" "${RESAE_PY_PKGS[@]}"
rs_build
rs_mpi_env
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
resae=$RESAE_BUILD_DIR/resae
config=${1:-$RESAE_ROOT/configs/demo-lambda.yaml}
[ $# -gt 0 ] && shift
lambdas=("$@")
[ ${#lambdas[@]} -gt 0 ] || lambdas=(1e-4 1e-2 1e-1 1)
grep -Eq '^  lambda_rel: ' "$config" || { echo "error: $config has no line '  lambda_rel: VALUE' under affine:" >&2; exit 2; }
cdir=$(cd "$(dirname "$config")" && pwd)
run_dir=$("$resae" validate "$config" | sed -n 's/^run_dir: *//p' | tr -d '"' | head -1)
[ -n "$run_dir" ] || { echo "error: resae validate $config printed no run_dir" >&2; exit 2; }
files=()
for lam in "${lambdas[@]}"; do
  tmp=$cdir/.lambda_study_$lam.yaml
  sed "s/^  lambda_rel: .*/  lambda_rel: $lam/" "$config" >"$tmp"
  rs_say "lambda_rel = $lam"
  start=$(date +%s)
  set +e
  mpirun -n "${RESAE_RANKS:-2}" --bind-to none "$resae" run "$tmp" >"$tmp.log" 2>&1
  rc=$?
  set -e
  rm -f "$tmp"
  [ "$rc" = 0 ] || { tail -20 "$tmp.log"; echo "error: the run at lambda_rel $lam failed (exit $rc); log $tmp.log" >&2; exit "$rc"; }
  rm -f "$tmp.log"
  rs_say "lambda_rel = $lam done in $(( $(date +%s) - start ))s"
  cp "$run_dir/results.h5" "$run_dir/results_lambda_$lam.h5"
  files+=("$run_dir/results_lambda_$lam.h5")
done
/usr/bin/python3 "$RESAE_ROOT/analysis/lambda_study.py" "${files[@]}"
