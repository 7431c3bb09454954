"""The pipeline at full model shape: random bf16 weights in the real Pythia-1.4B or Gemma-2-9B shape
(tests/bench/weights_mem.py writes them), then `resae run` on 2 ranks over a few thousand tokens with
the paper's layer set and one k: harvest, the affine fits at the real d, SAEs at the paper's width
(16 x d) for a few hundred steps, and the CE evaluation.

usage: rehearsal.py RESAE_BINARY [--arch neox|gemma2] [--ranks 2] [--workdir DIR] [--steps 200]
                    [--batch 128] [--expansion 16] [--k 160] [--seq-len 128] [--rates-out FILE]

While the run goes, every 0.25 s the script reads each rank's /proc/PID/status (RssAnon: private
memory; RssFile: mapped checkpoint pages) and smaps_rollup (Pss, a shared page counted 1/n in each of
n processes, so the ranks' Pss sum to the node's memory), and follows the log to know which stage
each rank is in. It prints per stage:
  - the measured peak private memory per rank against `resae validate`'s memory plan (the plan must be
    within 25% of the measurement, else the script exits 1);
  - the peak node memory (sum of Pss) and the mapped pages;
  - the rate: the stage's estimated FLOPs (`resae validate`'s cost model) per rank-second, and the
    stage's own throughput (tokens/s of the harvest, seconds per affine fit, tokens/s of the SAEs).
--rates-out writes the rates for `resae validate --rates FILE` (docs/scaling.md).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from weights_mem import GEMMA, NEOX, write_checkpoint  # noqa: E402

STAGE_OF = {"harvest": "harvest", "affine": "affine", "sae": "train", "eval": "evaluate", "ablate": "evaluate",
            "probe": "probe", "tpp": "tpp"}


def config_text(a, mdir, tok, run_dir):
    if a.arch == "gemma2":
        # The paper's gap-8 set of Gemma-2-9B is harvested and all 15 pairs of its layers are fitted
        # (layers.regression); SAEs and the CE evaluation run on its last two layers: the whole set's
        # decoder redundancy alone is 15 pairs x 2 x 57344^2 x 3584 = 354 TFLOP at the paper's width,
        # an hour per evaluation on one core.
        layers = "[32, 40]"
        regression = "  regression: [0, 8, 16, 24, 32, 40]\n"
        variants = "[raw, resae]"
        extra_eval = "  ablations: [zero]\n  affine_only: false\n"
    else:
        layers = "[0, 6, 12, 18]"  # the paper's Pythia-1.4B set
        regression = ""
        variants = "[raw, resae]"
        extra_eval = ""
    return f"""# written by tests/bench/rehearsal.py: the pipeline at full model shape
name: rehearsal-{a.arch}
run_dir: {run_dir}
model:
  path: {mdir}
data:
  tokens: {tok}
  seq_len: {a.seq_len}
  splits: {{calibration: {a.calib}, train: {a.train}, eval: {a.eval}}}
layers:
  sets:
    - {{name: paper, layers: {layers}}}
{regression}variants: {variants}
sae:
  k: [{a.k}]
  expansion: {a.expansion}
train:
  tokens: {a.steps * a.batch}
  batch_size: {a.batch}
  max_epochs: {max(1, -(-a.steps * a.batch // a.train))}
  warmup_steps: {a.steps // 10}
  shuffle_buffer: {a.train}
  checkpoint_every: 100000
eval:
  batch_sequences: {a.eval_batch}
{extra_eval}store:
  chunk_rows: {a.seq_len}
"""


class Sampler:
    """Follows the ranks' memory and the stage each rank is in."""

    def __init__(self, binary, cfg):
        self.binary, self.cfg = binary, cfg
        self.rank_stage = {}  # rank -> stage
        self.task_ranks = {}  # task name -> ranks
        self.peak = {}  # stage -> {"anon": max per rank, "file": max per rank, "pss": node}
        self.lock = threading.Lock()

    def on_line(self, line):
        m = re.search(r"task (\S+ ?\S*): start on (?:the world \((\d+) ranks\)|group \d+ \(ranks (\d+)-(\d+)\))", line)
        if m:
            name = m.group(1)
            ranks = range(int(m.group(2))) if m.group(2) else range(int(m.group(3)), int(m.group(4)) + 1)
            with self.lock:
                self.task_ranks[name] = list(ranks)
                for r in ranks:
                    self.rank_stage[r] = STAGE_OF.get(name.split()[0], name.split()[0])
            return
        m = re.search(r"task (\S+ ?\S*): (done|failed|interrupted|stopped)", line)
        if m:
            with self.lock:
                for r in self.task_ranks.pop(m.group(1), []):
                    self.rank_stage.pop(r, None)

    def pids(self):
        out = subprocess.run(["pgrep", "-f", f"{self.binary} run {self.cfg}"], capture_output=True, text=True).stdout
        res = {}
        for p in out.split():
            try:
                env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            for e in env:
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    res[int(e.split(b"=")[1])] = int(p)
        return res

    @staticmethod
    def mem(pid):
        try:
            st = open(f"/proc/{pid}/status").read()
            pss = open(f"/proc/{pid}/smaps_rollup").read()
        except OSError:
            return None
        kb = {k: int(v) * 1024 for k, v in re.findall(r"^(RssAnon|RssFile|RssShmem):\s+(\d+) kB", st, re.M)}
        kb["Pss"] = int(re.search(r"^Pss:\s+(\d+) kB", pss, re.M).group(1)) * 1024
        return kb

    def sample(self):
        pids = self.pids()
        mems = {r: self.mem(p) for r, p in pids.items()}
        mems = {r: m for r, m in mems.items() if m}
        if not mems:
            return
        node_pss = sum(m["Pss"] for m in mems.values())
        with self.lock:
            stages = dict(self.rank_stage)
        for r, m in mems.items():
            s = stages.get(r)
            if not s:
                continue
            p = self.peak.setdefault(s, {"anon": 0, "file": 0, "pss": 0})
            p["anon"] = max(p["anon"], m["RssAnon"] + m.get("RssShmem", 0))
            p["file"] = max(p["file"], m["RssFile"])
            p["pss"] = max(p["pss"], node_pss)


def gb(x):
    return f"{x / 1e9:6.2f} GB"


def validate(binary, cfg, ranks, work):
    plan_json = os.path.join(work, "plan.json")
    out = subprocess.run([binary, "validate", "--ranks-per-node", str(ranks), "--plan-json", plan_json, cfg],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"resae validate failed:\n{out.stderr}")
    cost = {m.group(1): float(m.group(2)) for m in re.finditer(r"^#\s+(harvest|affine|training|evaluation)\s+"
                                                              r"([0-9.e+]+) FLOP", out.stdout, re.M)}
    cost["train"] = cost.pop("training", 0.0)
    cost["evaluate"] = cost.pop("evaluation", 0.0)
    lines = out.stdout.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("# cost model")), len(lines))
    plan_lines = lines[start:]
    return json.load(open(plan_json)), cost, out.stdout, plan_lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--arch", choices=("neox", "gemma2"), default="neox")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/resae_weights_mem")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--k", type=int, default=160)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--calib", type=int, default=2048)
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--eval", type=int, default=256)
    ap.add_argument("--eval-batch", type=int, default=2)
    ap.add_argument("--rates-out", default="")
    ap.add_argument("--bench-steps", type=int, default=3,
                    help="sae_bench steps at batch 4096 for the train rate (0: none; at least 3: 2 warm up)")
    a = ap.parse_args()
    shape = GEMMA if a.arch == "gemma2" else NEOX
    work = os.path.abspath(a.workdir)
    os.makedirs(work, exist_ok=True)
    mdir = os.path.join(work, f"{a.arch}_shape_{shape['layers']}l")
    t = time.time()
    path = write_checkpoint(mdir, a.arch, shape["layers"])
    print(f"checkpoint: {path}, {os.path.getsize(path) / 1e9:.2f} GB bf16 ({time.time() - t:.0f} s)", flush=True)
    n_tok = a.calib + a.train + a.eval + 4 * a.seq_len
    n_seq = -(-n_tok // a.seq_len)
    tok = os.path.join(work, f"rehearsal_tokens_{a.arch}.h5")
    with h5py.File(tok, "w") as f:
        f["tokens"] = np.random.default_rng(2).integers(0, shape["vocab"], size=(n_seq, a.seq_len)).astype(np.int32)
    run_dir = os.path.join(work, f"rehearsal_run_{a.arch}")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    cfg = os.path.join(work, f"rehearsal_{a.arch}.yaml")
    open(cfg, "w").write(config_text(a, mdir, tok, run_dir))
    plan, cost, _, plan_lines = validate(a.binary, cfg, a.ranks, work)
    print("\n".join(plan_lines), flush=True)

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(a.ranks), a.binary, "run", cfg]
    s = Sampler(a.binary, cfg)
    log_path = os.path.join(work, f"rehearsal_{a.arch}.log")
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = []

    def reader():
        with open(log_path, "w") as lf:
            for line in p.stdout:
                log.append(line)
                lf.write(line)
                lf.flush()
                s.on_line(line)
                if re.search(r"task \S+ ?\S*: (start|done)|harvest: .* tok/s|sae .*tokens/s|stage \w+: \d+ tasks|"
                             r"ERROR|memory plan", line):
                    print(line.rstrip()[:220], flush=True)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while p.poll() is None:
        s.sample()
        time.sleep(0.25)
    th.join()
    wall = time.time() - t0
    if p.returncode:
        sys.exit(f"resae run failed ({p.returncode}); log in {log_path}")
    text = "".join(log)
    rank_s = {m.group(1): float(m.group(2)) for m in re.finditer(r"stage (\w+): \d+ tasks.*?, ([0-9.]+) rank-seconds",
                                                                 text)}
    rank_s["evaluate"] = rank_s.get("evaluate", 0) + rank_s.pop("ablate", 0)
    print(f"\n== rehearsal {a.arch}: {a.ranks} ranks, complete in {wall:.0f} s")
    harvest = re.findall(r"harvest: \S+ complete; (\d+) tok in ([0-9.]+)s", text)
    fits = [float(x) for x in re.findall(r"task affine \S+: done on group \d+ in ([0-9.]+)s", text)]
    sae_rates = [float(x) for x in re.findall(r"sae \S+: FVU [0-9.]+, L0 [0-9.]+, dead [0-9.]+, ([0-9.]+) tokens/s", text)]
    if harvest:
        print(f"harvest: {harvest[-1][0]} tokens in {float(harvest[-1][1]):.1f} s on {a.ranks} ranks: "
              f"{int(harvest[-1][0]) / float(harvest[-1][1]):.1f} tok/s")
    if fits:
        print(f"affine: {len(fits)} fits at d = {shape['d']}, {np.mean(fits):.1f} s each on one rank")
    if sae_rates:
        print(f"train: the SAEs rank 0 trained ({len(sae_rates)}) of {a.expansion} x {shape['d']} latents, k {a.k}, "
              f"batch {a.batch}: {np.mean(sae_rates):.0f} tokens/s each on one rank")
    print(f"\n{'stage':9s} {'plan/rank':>10s} {'measured':>10s} {'plan/meas':>9s}  {'mapped':>9s} {'node Pss':>9s}  "
          f"{'GFLOP/s/rank':>12s}")
    ok = True
    rates = {}
    for st in ("harvest", "affine", "train", "evaluate", "probe", "tpp"):
        if st not in plan["stages"] or st not in s.peak:
            continue
        pl = plan["stages"][st]["rank"]
        me = s.peak[st]["anon"]
        ratio = pl / me if me else float("nan")
        good = abs(pl - me) <= 0.25 * me
        ok &= good
        rate = cost.get(st, 0) / rank_s[st] / 1e9 if rank_s.get(st) else float("nan")
        if rate == rate and rate > 0:
            rates[st] = rate
        print(f"{st:9s} {gb(pl)} {gb(me)} {ratio:9.2f}{'' if good else ' !':2s}{gb(s.peak[st]['file'])} "
              f"{gb(s.peak[st]['pss'])}  {rate:12.1f}")
    print(f"memory plan within 25% of the measured private peak in every stage: {ok}")
    if 0 < a.bench_steps < 3:
        sys.exit("--bench-steps: at least 3 (sae_bench times the steps after 2 of warm-up)")
    if a.bench_steps > 0:
        # the run's SAEs take small batches (a few hundred steps in minutes); the grid's take 4096
        # tokens, where the step is GEMM-bound: the train rate comes from the trainer at that batch
        d, n = shape["d"], a.expansion * shape["d"]
        bdir = os.path.join(work, "rehearsal_sae_bench")
        os.makedirs(bdir, exist_ok=True)
        out = subprocess.run([os.path.join(os.path.dirname(a.binary), "tests", "bench", "sae_bench"), bdir, "--d", str(d),
                              "--n", str(n), "--k", str(a.k), "--batch", "4096", "--steps", str(a.bench_steps),
                              "--pool", "8192"], capture_output=True, text=True,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
        m = re.search(r"([0-9.]+) tokens per CPU second", out.stdout)
        ratio = re.search(r"step / GEMM = ([0-9.]+)x", out.stdout)
        if out.returncode or not m or float(m.group(1)) <= 0:
            sys.exit(f"sae_bench failed:\n{out.stdout}{out.stderr}")
        per_tok = 2.0 * d * n + 6.0 * a.k * d + d * d  # rs_grid_estimate_cost's raw SAE token
        rates["train"] = float(m.group(1)) * per_tok / 1e9
        print(f"train at the grid's batch (4096 tokens, sae_bench, {a.bench_steps} steps, 1 thread): "
              f"{float(m.group(1)):.0f} tokens/s = {rates['train']:.1f} GFLOP/s; step / encoder GEMM "
              f"{ratio.group(1) if ratio else '?'}x")
    if a.rates_out:
        with open(a.rates_out, "w") as f:
            f.write(f"# measured by tests/bench/rehearsal.py --arch {a.arch} ({a.ranks} ranks, 1 thread each): "
                    f"sustained GFLOP/s per core of each stage's estimated FLOPs\n")
            for k2, v in rates.items():
                f.write(f"{k2}: {v:.2f}\n")
        print(f"rates written to {a.rates_out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
