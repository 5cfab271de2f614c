"""In-process MAML speed experiment (docs/training.md, "Where the learning stands").

usage: python tools/meta_experiment.py NAME '{"meta.time_budget_s": 150, ...}'
Meta-trains MAML on config/demo_maml.yaml in-process with the given dotted overrides, then prints
and appends to /tmp/exp/results.jsonl the held-out normalised score per family before and
after one adaptation step ((return - random) / (scripted - random)).
"""

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.training.baselines import normalised_score, random_returns, scripted_returns
from avatar_meta.training.common import make_env
from avatar_meta.training.evaluate import evaluate_checkpoint
from avatar_meta.training.meta_loop import train_algorithm

torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(message)s")
name = sys.argv[1]
over = json.loads(sys.argv[2])
base = {
    "env.inprocess": True,
    "output.progress": False,
    "output.tensorboard": False,
    "eval.adaptation_steps": 1,
}
base.update(over)
cfg = load_config(str(Path(__file__).resolve().parents[1] / "config" / "demo_maml.yaml"), base)
run_dir = Path(f"/tmp/exp/{name}")
run_dir.mkdir(parents=True, exist_ok=True)
env = make_env(cfg)
t0 = time.perf_counter()
st = train_algorithm("maml", cfg, env, run_dir)
wall = time.perf_counter() - t0
held = cfg.task_distribution().heldout()
recs = evaluate_checkpoint("maml", cfg, env, run_dir, held)
rnd, _ = random_returns(env, held, 8, 0)
scr = scripted_returns(held, 8, 0)
env.close()
fams = sorted({t.family for t in held})
out = {"name": name, "over": over, "iters": st.iteration, "env_steps": st.env_steps, "wall": wall}
pre = np.array([r["return_by_step"][0] for r in recs])
post = np.array([r["return_by_step"][1] for r in recs])
npre = normalised_score(pre, rnd, scr)
npost = normalised_score(post, rnd, scr)
fam = np.array([t.family for t in held])
out["all"] = [float(np.nanmean(npre)), float(np.nanmean(npost))]
for f in fams:
    out[f] = [
        round(float(np.nanmean(npre[fam == f])), 3),
        round(float(np.nanmean(npost[fam == f])), 3),
    ]
c = st.curve
out["curve_first_last"] = [
    (round(e["pre_return"], 1), round(e.get("post_return", 0), 1)) for e in (c[:3] + c[-3:])
]
print("RESULT", json.dumps(out), flush=True)
with open("/tmp/exp/results.jsonl", "a") as fh:
    fh.write(json.dumps(out) + "\n")
