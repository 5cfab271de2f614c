"""Re-evaluate a strategy-search checkpoint under several evaluation settings
(docs/training.md, "Identifying the body").

usage: python tools/search_eval.py RUN_DIR '[{"meta.search_identify_body": false}, {}]'
           [--run-seed N] [SEEDS]

For each settings dict (dotted overrides of config/demo.yaml), the run's search checkpoint
adapts to the 24 held-out tasks in-process once per evaluation seed (default 1000 1001 1002),
and the tool prints one JSON line: the normalised score ((return - random) / (scripted -
random)) after steps 0..3, averaged over the seeds, overall and per family, and step 3 per
seed. The same checkpoint under each setting: the difference is the setting's. `--run-seed`
is the run's `--seed` (its held-out tasks follow it; default 0).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.training.baselines import normalised_score, random_returns
from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint
from avatar_meta.training.common import make_env
from avatar_meta.training.evaluate import evaluate_loaded
from avatar_meta.training.oracle_check import scripted_returns

torch.set_num_threads(1)
CONFIG = str(Path(__file__).resolve().parents[1] / "config" / "demo.yaml")


def main() -> None:
    args = sys.argv[1:]
    run_seed = 0
    if "--run-seed" in args:
        at = args.index("--run-seed")
        run_seed = int(args[at + 1])
        del args[at : at + 2]
    run_dir, settings = Path(args[0]), json.loads(args[1])
    seeds = [int(s) for s in args[2:]] or [1000, 1001, 1002]
    base = {
        "env.inprocess": True,
        "env.seed": run_seed,
        "output.progress": False,
        "output.tensorboard": False,
    }
    config = load_config(CONFIG, base)
    heldout = config.task_distribution().heldout()
    env = make_env(config)
    random, _ = random_returns(env, heldout, 8, 0)
    scripted = scripted_returns(heldout, 8, 0)
    lo, hi = np.array(random)[:, None], np.array(scripted)[:, None]
    families = np.array([t.family for t in heldout])
    checkpoint = load_checkpoint(checkpoint_path(run_dir, "search"))
    for overrides in settings:
        setting = load_config(CONFIG, {**base, **overrides})
        scores = []
        for seed in seeds:
            records = evaluate_loaded(checkpoint, "search", "search", setting, env, heldout, seed)
            returns = np.array([r["return_by_step"] for r in records])
            scores.append(normalised_score(returns, lo, hi))
        mean = np.mean(scores, axis=0)
        line = {
            "settings": overrides,
            "all": [round(float(x), 3) for x in mean.mean(0)],
            "step3_by_seed": [round(float(s[:, -1].mean()), 3) for s in scores],
        }
        for f in sorted(set(families)):
            line[f] = [round(float(x), 3) for x in mean[families == f].mean(0)]
        print(json.dumps(line), flush=True)
    env.close()


if __name__ == "__main__":
    main()
