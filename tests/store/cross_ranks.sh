#!/usr/bin/env bash
# Stores harvested at 1, 2 and 4 ranks are identical (h5diff and a bitwise dataset comparison),
# hold the producer's values (--check), and their statistics agree with the rows (store_info.py
# --verify), also with position 0 kept and an empty split, with the scalar code instead of F16C/AVX,
# and with the layers handed to the driver's put. The float16 store equals numpy's float16 rounding of the float32 store, bit for bit.
# usage: cross_ranks.sh DRIVER MPIEXEC OUT_DIR SRC_DIR
set -euo pipefail
driver=$1 mpiexec=$2 out=$3/cross_ranks src=$4
py=/usr/bin/python3
rm -rf "$out" && mkdir -p "$out"
run() { # ranks dir args...
  local n=$1 dir=$2; shift 2
  "$mpiexec" --oversubscribe --bind-to none --mca btl self,vader -n "$n" "$driver" "$dir" --check "$@" \
    >"$dir.log" 2>&1 || { cat "$dir.log"; echo "FAIL: harvest at $n ranks ($*)"; exit 1; }
  grep -q "check: ok" "$dir.log" || { cat "$dir.log"; echo "FAIL: check at $n ranks"; exit 1; }
}
for dt in float32 float16; do
  for n in 1 2 4; do run "$n" "$out/$dt-np$n" --dtype "$dt" --per-round $((n == 2 ? 3 : 1)); done
  # the scalar conversion and statistics code (no F16C/AVX) writes the same bytes
  RESAE_NO_F16C=1 run 2 "$out/$dt-np2-scalar" --dtype "$dt"
  # layers handed over through the driver's put (packed out of place) instead of the buffers
  run 2 "$out/$dt-np2-put" --dtype "$dt" --put
  for n in 2 4 2-scalar 2-put; do
    h5diff "$out/$dt-np1/activations.h5" "$out/$dt-np$n/activations.h5" \
      || { echo "FAIL: h5diff $dt np1 vs np$n"; exit 1; }
    "$py" "$src/analysis/store_info.py" "$out/$dt-np1" --compare "$out/$dt-np$n" >/dev/null \
      || { "$py" "$src/analysis/store_info.py" "$out/$dt-np1" --compare "$out/$dt-np$n" | tail; exit 1; }
  done
  "$py" "$src/analysis/store_info.py" "$out/$dt-np2" --verify | tail -1 | grep -q "store check: ok" \
    || { "$py" "$src/analysis/store_info.py" "$out/$dt-np2" --verify; echo "FAIL: verify $dt"; exit 1; }
done
# a width that is not a multiple of the SIMD width, checkpoints every 10 ms (round agreements that
# complete a round later, ranks drifting apart by a 5 ms batch), the scalar code at 4 ranks
run 1 "$out/d13-np1" --dtype float16 --d 13
run 4 "$out/d13-np4" --dtype float16 --d 13 --flush-seconds 0.01 --sleep-us 5000
RESAE_NO_F16C=1 run 4 "$out/d13-np4-scalar" --dtype float16 --d 13 --flush-seconds 0.02 --put
for v in np4 np4-scalar; do
  h5diff "$out/d13-np1/activations.h5" "$out/d13-$v/activations.h5" || { echo "FAIL: h5diff d13 np1 vs $v"; exit 1; }
done
# position 0 kept and an empty calibration split
for n in 1 4; do run "$n" "$out/keep0-np$n" --keep-pos0 --calib-tokens 0; done
h5diff "$out/keep0-np1/activations.h5" "$out/keep0-np4/activations.h5" || { echo "FAIL: h5diff keep0"; exit 1; }
"$py" "$src/analysis/store_info.py" "$out/keep0-np4" --verify | tail -1 | grep -q "store check: ok" \
  || { echo "FAIL: verify keep0"; exit 1; }
"$py" - "$out/float32-np1/activations.h5" "$out/float16-np4/activations.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
bad = 0
for s in ("calib", "train", "eval"):
    for name in ("Lemb", "L1", "L3"):
        x, h = a[s][name][()], b[s][name][()]
        assert h.dtype == np.float16, h.dtype
        ref = x.astype(np.float16)
        if ref.tobytes() != h.tobytes():
            bad += 1
            print("MISMATCH /%s/%s: %d values differ from numpy float16" % (s, name, int((ref != h).sum())))
        err = np.abs(h.astype(np.float64) - x) / np.maximum(np.abs(x), 2.0**-14)
        if err.max() > 2.0**-11:
            bad += 1
            print("MISMATCH /%s/%s: relative rounding error %.3g > 2^-11" % (s, name, err.max()))
print("float16 vs numpy: %s" % ("FAILED" if bad else "ok"))
sys.exit(1 if bad else 0)
PY
echo "cross-rank stores identical: ok"
