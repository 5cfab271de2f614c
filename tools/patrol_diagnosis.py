"""Where patrol's policy loses to its teacher and to the scripted controller (docs/training.md,
"Imitation past the clip, and what still fails on patrol").

usage: python tools/patrol_diagnosis.py RUN_DIR [TASKS] [SEED] [--heldout]

Drives the same patrol starts (TASKS tasks, one episode each, world seed SEED) three ways, in
process: the scripted controller (the normalisation reference), the expert's labels in closed
loop (the teacher the policy imitates, `world.observed_expert`) and the run's strategy-search
patrol policy told each task's true code (deterministic). Prints each one's mean return,
normalised score ((return - random) / (scripted - random)), landmarks reached and forward
speed; how often the policy's forward command reaches the clip where the teacher's does; and
the policy's worst episodes. `--heldout` takes the tasks from config/demo.yaml's held-out pool
(patrol only, drawn as `tools/told_code.py` draws them) instead of fresh training draws.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from avatar_meta import contract
from avatar_meta.config import load_config
from avatar_meta.envs.inprocess import wire_spec
from avatar_meta.rl import Policy
from avatar_meta.tasks import TaskDistribution, task_code
from avatar_meta.training.checkpoints import checkpoint_path, load_checkpoint
from avatar_meta.world import scripted
from avatar_meta.world.observed_expert import expert_labels
from avatar_meta.world.plaza import Plaza

torch.set_num_threads(1)
CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
args = [a for a in sys.argv[1:] if not a.startswith("--")]
run_dir = Path(args[0])
n = int(args[1]) if len(args) > 1 else 36
seed = int(args[2]) if len(args) > 2 else 7
config = load_config(str(CONFIG), {"env.inprocess": True})
if "--heldout" in sys.argv:
    patrol_only = {  # the same draw as tools/told_code.py's patrol-only overrides
        "tasks.families": ["patrol"],
        "tasks.n_train": 600,
        "tasks.n_heldout": n,
        "meta.meta_batch_size": 60,
        "meta.family_weights": {},
    }
    tasks = load_config(str(CONFIG), patrol_only).task_distribution().heldout()
else:
    tasks = TaskDistribution(families=("patrol",), n_train=n, n_heldout=1, seed=11).train_tasks()

checkpoint = load_checkpoint(checkpoint_path(run_dir, "search"))
policy = Policy(config.policy_spec())
params = {
    k: v.expand(n, *v.shape).clone() for k, v in checkpoint["params_by_key"]["patrol"].items()
}
params["actor.context"] = torch.stack([torch.from_numpy(task_code(t)).float() for t in tasks])
act = torch.func.vmap(
    lambda p, o: policy.act(p, checkpoint["buffers"], o[None], deterministic=True).cont_action[0]
)
Driver = Callable[[Plaza, list[np.ndarray], np.ndarray, int], np.ndarray]


def drive(driver: Driver) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One episode per task -> (returns [n], arrivals [n], observations [n, T, OBS],
    commands [n, T, 2])."""
    plaza = Plaza(num_areas=n, agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, wire_spec(task))
    obs, _ = plaza.reset()
    returns, arrivals, seen, commands = np.zeros(n), np.zeros(n), [], []
    for step in range(contract.MAX_EPISODE_STEPS):
        seen.append(np.asarray(obs).copy())
        cont = driver(plaza, seen, np.asarray(obs), step)
        commands.append(cont)
        slot_before = plaza.state()["patrol_slot"].copy()
        result = plaza.step(cont, np.zeros(n, dtype=np.int64))
        returns += result.reward
        if result.done.any():
            break
        arrivals += plaza.state()["patrol_slot"] > slot_before
        obs = result.obs
    return returns, arrivals, np.stack(seen, 1), np.stack(commands, 1)


def teacher(plaza: Plaza, seen: list[np.ndarray], obs: np.ndarray, step: int) -> np.ndarray:
    history = np.stack(seen, 1)
    labels = [expert_labels(wire_spec(t), history[i : i + 1])[0] for i, t in enumerate(tasks)]
    return np.stack([c[0, -1] for c in labels])


def student(plaza: Plaza, seen: list[np.ndarray], obs: np.ndarray, step: int) -> np.ndarray:
    with torch.no_grad():
        return act(params, torch.as_tensor(obs, dtype=torch.float32)).numpy()


drivers: dict[str, Driver] = {
    "random": lambda plaza, seen, obs, step: np.random.default_rng(step).uniform(-1, 1, (n, 2)),
    "scripted": lambda plaza, seen, obs, step: scripted.scripted_actions(plaza)[0],
    "teacher": teacher,
    "policy": student,
}
runs = {name: drive(driver) for name, driver in drivers.items()}
floor, top = runs["random"][0], runs["scripted"][0]
for name, (returns, arrivals, seen, _) in runs.items():
    score = np.mean((returns - floor) / (top - floor))
    speed = seen[..., contract.OBS["own_velocity"]][..., 1].mean()
    print(
        f"{name:9s} return {returns.mean():6.2f}  normalised {score:5.3f}  "
        f"landmarks {arrivals.mean():.2f}  forward speed {speed:.3f}"
    )
_, _, seen, commands = runs["policy"]
labels = np.concatenate(
    [expert_labels(wire_spec(t), seen[i : i + 1])[0] for i, t in enumerate(tasks)]
)
full = labels[..., 0] >= 0.99
print(
    f"policy's states: the teacher says full speed on {full.mean():.0%}; the policy's command "
    f"reaches the clip on {(commands[..., 0][full] >= 1).mean():.0%} of them "
    f"(mean {np.clip(commands[..., 0][full], -1, 1).mean():.3f})"
)
score = (runs["policy"][0] - floor) / (top - floor)
print("worst episodes (task, route, normalised, policy / teacher / scripted return):")
for i in np.argsort(score)[:6]:
    route = contract.PATROL_ROUTES[int(tasks[i].params[0])]
    print(
        f"  {i:3d} {route} {score[i]:6.2f}  {runs['policy'][0][i]:6.1f} / "
        f"{runs['teacher'][0][i]:6.1f} / {top[i]:6.1f}"
    )
