"""End-to-end check of the probing stage on the demo: the model ceiling probes (pooled h, all d
dimensions) of a finished run against PyTorch + scikit-learn, on the same plan.

The plan (class sets, pools, binary tasks) is rebuilt by tests/reference/probe_ref.py from the run's
probe file and its eval.probing keys; the windows go through tests/reference/neox_np.py (float64) up
to the deepest probed layer, h is mean-pooled over positions pool_skip_first..T-1 and sklearn's
LogisticRegression(solver="liblinear", C=l2_c, tol=1e-4) is fitted per class. Every per-class accuracy
of kind model_all in RUN_DIR/results.h5 must match (a window whose decision value sits within float
rounding of 0 may flip one test prediction: the script reports and tolerates at most one such
difference of 1/n_test per class). Also prints, as a diagnostic, the same probes on standardized
features and with C = 100.

usage: check_probe_ceiling.py RUN_DIR   (exit 1 on a mismatch)"""
import os
import sys

import h5py
import numpy as np
import scipy.special
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, ".."))
import neox_np  # noqa: E402
import probe_ref  # noqa: E402


def main():
    run = sys.argv[1]
    cfg = yaml.safe_load(open(os.path.join(run, "config.yaml")))
    pc = cfg["eval"]["probing"]
    with h5py.File(pc["data"], "r") as f:
        tokens, labels, groups = f["tokens"][()], f["labels"][()], f["groups"][()]
        n_labels = len(f["label_names"])
    o = dict(n_train=pc["n_train"], n_test=pc["n_test"], classes_per_set=pc["classes_per_set"],
             max_sets=pc["class_sets"], test_fraction=pc["test_fraction"], seed=pc["seed"])
    _, _, sets = probe_ref.build_plan(labels, groups, o, n_labels)
    with h5py.File(os.path.join(run, "results.h5"), "r") as r:
        t = r["probing/probing"][()]
        cols = r["probing/probing"].attrs["columns"]
        cols = (cols.decode() if isinstance(cols, bytes) else cols).split(",")
    c = {n: i for i, n in enumerate(cols)}
    layers = sorted({int(x) for x in t[t[:, c["kind"]] == 2, c["layer"]]})
    neox_np._erf = scipy.special.erf  # the same function, vectorized
    model = neox_np.NeoX(cfg["model"]["path"])

    class Done(Exception):
        pass

    def forward(tok):
        got = {}

        def hook(layer, h):
            got[layer] = h
            if layer == max(layers):
                raise Done
        try:
            model(tok, hook)
        except Done:
            pass
        return got
    skip, C, bad = pc["pool_skip_first"], pc["l2_c"], 0
    for s, S in enumerate(sets):
        pooled = {L: [] for L in layers}
        for b in range(0, len(S["windows"]), 64):
            resid = forward(tokens[S["windows"][b:b + 64]].astype(np.int64))
            for L in layers:
                pooled[L].append(resid[L][:, skip:, :].mean(1).astype(np.float32))
        for L in layers:
            X = np.concatenate(pooled[L]).astype(np.float64)
            for ci, task in enumerate(S["tasks"]):
                (tr, ytr), (te, yte) = task[0], task[1]
                acc = (LogisticRegression(solver="liblinear", C=C, tol=1e-4).fit(X[tr], ytr).predict(X[te]) == yte).mean()
                sc = StandardScaler().fit(X[tr])
                acc_std = (LogisticRegression(solver="liblinear", C=C, tol=1e-4).fit(sc.transform(X[tr]), ytr)
                           .predict(sc.transform(X[te])) == yte).mean()
                acc_c100 = (LogisticRegression(solver="liblinear", C=100.0, tol=1e-4).fit(X[tr], ytr)
                            .predict(X[te]) == yte).mean()
                row = t[(t[:, c["kind"]] == 2) & (t[:, c["layer"]] == L) & (t[:, c["class_set"]] == s)
                        & (t[:, c["label"]] == S["labels"][ci])]
                mine = row[0, c["accuracy"]] if len(row) == 1 else np.nan
                diff = abs(mine - acc) * len(yte)
                flag = "" if diff < 0.5 else " (1 test window differs)" if diff < 1.5 else " MISMATCH"
                bad += diff >= 1.5 or np.isnan(mine)
                print(f"set {s} L{L} class {S['labels'][ci]:3d}: resae {mine:.4f} sklearn {acc:.4f}{flag}; "
                      f"standardized {acc_std:.4f}, C=100 {acc_c100:.4f}")
    print("probe ceiling check:", "FAILED" if bad else "ok")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
