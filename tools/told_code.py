"""How well a strategy-search checkpoint acts when it is *told* each held-out task's true code
(docs/training.md, "Refinement, dataset aggregation and patrol").

usage: python tools/told_code.py RUN_DIR ['{"tasks.families": ["patrol"]}']

The search can only pick among the behaviours its policy has; this measures the policy
alone: every held-out task of the run's config (config/demo.yaml plus the dotted
overrides, in-process) runs 3 x 20 episodes with its own task code as the context (the one
"probe" is the truth), and the tool prints the normalised score ((return - random) /
(scripted - random)) per family and overall, next to nothing else. Compare it with the
run's held-out scores by step: the gap is what the search loses to quantisation and noise.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.rl import Policy
from avatar_meta.tasks import task_code
from avatar_meta.training.baselines import normalised_score, random_returns
from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint, policy_key
from avatar_meta.training.common import make_env
from avatar_meta.training.evaluate import evaluate_search
from avatar_meta.training.oracle_check import scripted_returns

torch.set_num_threads(1)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
run_dir = Path(sys.argv[1])
overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
config = load_config(
    str(CONFIG),
    {
        "env.inprocess": True,
        "output.progress": False,
        "output.tensorboard": False,
        # one probe, the truth; its finalist runs the support step's other episodes
        "meta.search_probes": 1,
        "meta.search_finalists": 1,
        "meta.search_refine": 0,
        **overrides,
    },
)
heldout = config.task_distribution().heldout()
env = make_env(config)
random, _ = random_returns(env, heldout, 8, 0)
scripted = scripted_returns(heldout, 8, 0)
checkpoint = load_checkpoint(checkpoint_path(run_dir, "search"))
by_key = checkpoint["params_by_key"]
keys = [policy_key(config, t.family) for t in heldout]
init = {name: torch.stack([by_key[k][name] for k in keys]) for name in by_key[keys[0]]}
truth = torch.stack([torch.from_numpy(task_code(t)) for t in heldout])[:, None]
records = evaluate_search(
    env,
    Policy(config.policy_spec()),
    init,
    checkpoint["buffers"],
    truth,
    [truth[i] for i in range(len(heldout))],
    heldout,
    config,
    "told",
)
env.close()
returns = np.array([r["return_by_step"] for r in records])[:, 1:]
score = normalised_score(returns, np.array(random)[:, None], np.array(scripted)[:, None])
families = np.array([t.family for t in heldout])
by_family = {f: round(float(np.nanmean(score[families == f])), 3) for f in sorted(set(families))}
print("told the true code:", json.dumps(by_family), "all", round(float(np.nanmean(score)), 3))
