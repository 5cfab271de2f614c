"""`avatar-meta demo`: a tour of the built-in world through the real ML-Agents protocol.

Launches the headless world with stock `UnityEnvironment`, puts every scenario family on two
areas (with different hidden parameters), runs a random avatar through the protocol, and
compares it with the scripted controller that knows the hidden parameters (run in-process on
the same tasks). The gap between the two columns is what a meta-learner has to close from a
handful of episodes.
"""

from __future__ import annotations

import time

import numpy as np

from avatar_meta import contract
from avatar_meta.envs.mlagents_env import MLAgentsTaskEnv, WorldConfig
from avatar_meta.envs.rollouts import RandomPolicy, collect
from avatar_meta.tasks import Task, TaskDistribution
from avatar_meta.world.plaza import Plaza
from avatar_meta.world.scripted import scripted_actions

TASKS_PER_FAMILY = 2


def demo_tasks(seed: int) -> list[Task]:
    """Two training tasks per family, reproducible from the seed."""
    dist = TaskDistribution(seed=seed, n_train=6 * TASKS_PER_FAMILY, n_heldout=6)
    rng = np.random.default_rng(seed)
    tasks = dist.sample_train(rng, len(contract.FAMILIES) * TASKS_PER_FAMILY)
    return sorted(tasks, key=lambda t: contract.FAMILY_BY_NAME[t.family].index)


def scripted_returns(tasks: list[Task], episodes: int, seed: int) -> np.ndarray:
    """Mean episode return of the scripted controller per task, in-process."""
    plaza = Plaza(num_areas=len(tasks), seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, task.spec)
    plaza.reset()
    totals = np.zeros(len(tasks))
    counts = np.zeros(len(tasks))
    running = np.zeros(len(tasks))
    while counts.min() < episodes:
        result = plaza.step(*scripted_actions(plaza))
        running += result.reward
        ended = result.done & (counts < episodes)
        totals[ended] += running[ended]
        counts[ended] += 1
        running[result.done] = 0.0
    return totals / episodes


def run(episodes: int = 2, seed: int = 0, base_port: int = 5005) -> int:
    tasks = demo_tasks(seed)
    print(
        f"avatar-meta demo: {len(tasks)} tasks ({TASKS_PER_FAMILY} per family), "
        f"{episodes} episode(s) each, through the ML-Agents protocol"
    )
    start = time.perf_counter()
    config = WorldConfig(num_areas=len(tasks), base_port=base_port, seed=seed)
    with MLAgentsTaskEnv(config) as env:
        rollouts = collect(env, RandomPolicy(seed), tasks, episodes)
    protocol_s = time.perf_counter() - start
    steps = sum(r.env_steps for r in rollouts)
    scripted = scripted_returns(tasks, episodes, seed)

    print(f"\n{'family':<16}{'hidden parameters':<44}{'random':>9}{'scripted':>10}")
    for task, rollout, reference in zip(tasks, rollouts, scripted, strict=True):
        params = ", ".join(f"{k}={v:g}" for k, v in task.spec.param_dict().items())
        print(
            f"{task.family:<16}{params:<44}{rollout.episode_return.mean():>9.1f}{reference:>10.1f}"
        )
    print(
        f"\n{steps} agent-steps through the protocol in {protocol_s:.1f} s "
        f"({steps / protocol_s:.0f} agent-steps/s, world start included)."
    )
    print(
        "random = a random avatar through stock UnityEnvironment; scripted = a controller that"
        " knows the hidden parameters (in-process, same tasks)."
    )
    return 0
