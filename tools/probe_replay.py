"""Compare support steps of strategy search by replaying recorded probe returns
(docs/training.md, "Strategy search").

usage: python tools/probe_replay.py RUN_DIR [EPISODES [protocol]]

Records: every one of the 20 first probes of each held-out task (`training.evaluate.
search_hypotheses` with 20 probes) runs EPISODES episodes (default 20) with the run's search
checkpoint, in-process (or through the protocol with `protocol`), once; the returns are
saved next to the checkpoint as `probe_returns.npz` and reused on the next call.
Replays: each support-step schedule of 20 episodes, e.g. 16 probes x 1 episode then the best 2
x 2 more, draws its episodes from those records 400 times, then steps 1-3 act with the best
probe by shrunk mean return (`meta.search.ProbeSearch`), and prints the normalised score
((return - random) / (scripted - random), the true mean of the chosen probe) after step 1 as
mean +- std and 1st percentile, and after step 3.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.envs.rollouts import collect
from avatar_meta.meta.search import CONTEXT, ProbeSearch
from avatar_meta.rl import Policy
from avatar_meta.training.baselines import random_returns
from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint
from avatar_meta.training.common import make_env, per_task_policy_fn
from avatar_meta.training.evaluate import search_hypotheses
from avatar_meta.training.oracle_check import scripted_returns

PROBES = 20
SCHEDULES = {
    "20 x 1": [(20, 1)],
    "10 x 2": [(10, 2)],
    "7 x 3": [(7, 3)],
    "10 x 1, best 5 x 1, best 2 x 2, best 1 x 1": [(10, 1), (5, 1), (2, 2), (1, 1)],
    "12 x 1, best 4 x 1, best 2 x 2": [(12, 1), (4, 1), (2, 2)],
    "16 x 1, best 2 x 2": [(16, 1), (2, 2)],
    "18 x 1, best 2 x 1": [(18, 1), (2, 1)],
}


def record(run: Path, episodes: int, inprocess: bool) -> dict[str, np.ndarray]:
    overrides = {
        "env.inprocess": inprocess,
        "meta.search_probes": PROBES,
        "meta.search_finalists": 1,
    }
    config = load_config(run / "config.yaml", overrides)
    env = make_env(config)
    heldout = config.task_distribution().heldout()
    ck = load_checkpoint(checkpoint_path(run, "search"))
    probes, _ = search_hypotheses(config, heldout)
    k = len(heldout)
    init = {
        n: torch.stack([ck["params_by_key"][t.family][n] for t in heldout]) for n in ck["params"]
    }
    params = {n: v.repeat_interleave(PROBES, 0) for n, v in init.items()}
    params[CONTEXT] = probes.reshape(k * PROBES, -1)
    policy = Policy(config.policy_spec())
    act = per_task_policy_fn(policy, params, ck["buffers"], torch.Generator().manual_seed(0))
    rolls = collect(env, act, [t for t in heldout for _ in range(PROBES)], episodes)
    returns = np.stack([r.episode_return for r in rolls]).reshape(k, PROBES, episodes)
    out = {
        "returns": returns,
        "random": np.array(random_returns(env, heldout, 8, 0)[0]),
        "scripted": np.array(scripted_returns(heldout, 8, 0)),
    }
    env.close()
    return out


def replay(data: dict[str, np.ndarray], schedule: list[tuple[int, int]], draws: int = 400) -> None:
    returns = data["returns"]
    k, _, r = returns.shape
    truth = (returns.mean(2) - data["random"][:, None]) / (data["scripted"] - data["random"])[
        :, None
    ]
    rng = np.random.default_rng(0)
    rows = np.arange(k)[:, None, None]
    first, third = [], []
    for _ in range(draws):
        search = ProbeSearch.start(torch.zeros(k, PROBES, 1))
        arms = np.tile(np.arange(schedule[0][0]), (k, 1))
        for n, episodes in schedule:
            arms = arms if n == arms.shape[1] else search.best(n)
            drawn = returns[rows, arms[:, :, None], rng.integers(r, size=(k, n, episodes))]
            search.record(arms, drawn)
        scores = []
        for _ in range(3):
            arm = search.best(1)
            scores.append(truth[np.arange(k), arm[:, 0]].mean())
            drawn = returns[rows, arm[:, :, None], rng.integers(r, size=(k, 1, 20))]
            search.record(arm, drawn)
        first.append(scores[0])
        third.append(scores[2])
    s1 = np.array(first)
    print(
        f"{s1.mean():.3f} +- {s1.std():.3f}  1st percentile {np.percentile(s1, 1):.3f}  step 3 {np.mean(third):.3f}"
    )


def main() -> None:
    run = Path(sys.argv[1])
    episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    saved = run / "probe_returns.npz"
    if not saved.exists():
        np.savez(saved, **record(run, episodes, inprocess=len(sys.argv) < 4))
    data = dict(np.load(saved))
    for name, schedule in SCHEDULES.items():
        print(f"{name:45s}", end=" ", flush=True)
        replay(data, schedule)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
