"""Scaling curve of MAML meta-training (docs/training.md, "Where the learning stands").

usage: python tools/meta_scaling.py NAME '{"meta.outer_lr": 0.01}' CHUNK_S TOTAL_S [ALGORITHM]
Meta-trains ALGORITHM (default maml) in-process on config/demo_maml.yaml (the MAML recipe;
config/demo.yaml, strategy search, for ALGORITHM search) with the given dotted overrides, and after
every CHUNK_S seconds of meta-training (resuming the same run) evaluates the 24 held-out
tasks (0..3 adaptation steps); prints one CHUNK line per point and appends it to
/tmp/exp/long.jsonl. Normalised score = (return - random) / (scripted - random) per task.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.training.baselines import normalised_score, random_returns
from avatar_meta.training.common import make_env
from avatar_meta.training.evaluate import evaluate_checkpoint
from avatar_meta.training.meta_loop import train_algorithm
from avatar_meta.training.oracle_check import scripted_returns

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "config"
name, over, chunk, total = (
    sys.argv[1],
    json.loads(sys.argv[2]),
    float(sys.argv[3]),
    float(sys.argv[4]),
)
algorithm = sys.argv[5] if len(sys.argv) > 5 else "maml"
DEMO = CONFIGS / ("demo.yaml" if algorithm == "search" else "demo_maml.yaml")
base = {
    "env.inprocess": True,
    "output.progress": False,
    "output.tensorboard": False,
    "meta.meta_iterations": 100000,
    "meta.algorithms": [algorithm],
}
base.update(over)
run_dir = Path(f"/tmp/exp/{name}")
run_dir.mkdir(parents=True, exist_ok=True)
cfg0 = load_config(str(DEMO), base)
held = cfg0.task_distribution().heldout()
env = make_env(cfg0)
rnd, _ = random_returns(env, held, 8, 0)
scr = scripted_returns(held, 8, 0)
env.close()
fam = np.array([t.family for t in held])
budget = chunk
while budget <= total + 1:
    cfg = load_config(str(DEMO), {**base, "meta.time_budget_s": budget})
    env = make_env(cfg)
    st = train_algorithm(algorithm, cfg, env, run_dir, resume=True)
    env.close()
    env = make_env(cfg)
    recs = evaluate_checkpoint(algorithm, cfg, env, run_dir, held)
    env.close()
    R = np.array([r["return_by_step"] for r in recs])
    N = normalised_score(R, np.array(rnd)[:, None], np.array(scr)[:, None])
    out = {
        "name": name,
        "algorithm": algorithm,
        "budget_s": budget,
        "iters": st.iteration,
        "env_steps": st.env_steps,
        "all_by_step": [round(float(x), 3) for x in np.nanmean(N, 0)],
    }
    for f in sorted(set(fam)):
        out[f] = [round(float(x), 3) for x in np.nanmean(N[fam == f], 0)]
    print("CHUNK", json.dumps(out), flush=True)
    with open("/tmp/exp/long.jsonl", "a") as fh:
        fh.write(json.dumps(out) + "\n")
    budget += chunk
