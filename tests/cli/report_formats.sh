#!/usr/bin/env bash
# resae report --format text|markdown|csv and --table on a small finished run: the pipeline fixture
# (tests/data/pipeline/small.yaml) with training curves, sparse probing and TPP, so that every table is
# there. tests/cli/check_report.py recomputes every table from results.h5 and checks each format and
# the usage errors.
# usage: report_formats.sh RESAE MPIEXEC OUT_DIR SRC_DIR
set -uo pipefail
resae=$1 mpiexec=$2 out=$3 src=$4
py=/usr/bin/python3
data=$src/tests/data/pipeline
dir=$out/cli_report_formats
rm -rf "$dir"; mkdir -p "$dir"
fail() { echo "FAIL: $*"; exit 1; }

"$py" "$src/tests/run/make_probe_windows.py" "$data/tokens.h5" "$dir/probe.h5" || fail "making the labelled windows"
sed -e "s#^run_dir:.*#run_dir: $dir/run#" -e "s#path: model#path: $data/model#" \
    -e "s#tokens: tokens.h5#tokens: $data/tokens.h5#" \
    -e "s#^  dead_tokens: 4096#&\n  curve_bins: 5#" \
    -e "s#^  batch_sequences: 8#&\n  probing: {enabled: true, data: $dir/probe.h5, n_train: 20, n_test: 8, classes_per_set: 3}\n  tpp: {enabled: true, budgets: [2, 5], epochs: 30}#" \
    "$data/small.yaml" >"$dir/small.yaml"
for want in "curve_bins: 5" "tpp: {enabled: true"; do
  grep -q "$want" "$dir/small.yaml" || fail "could not edit the config ($want)"
done
"$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n 2 "$resae" run "$dir/small.yaml" >"$dir/run.log" 2>&1 ||
  { tail -30 "$dir/run.log"; fail "resae run"; }
"$py" "$src/tests/cli/check_report.py" "$resae" "$dir/run" "$dir/check" || fail "resae report formats"
