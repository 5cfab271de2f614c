"""How far the policy class gets when it is *told* the hidden parameters (docs/training.md,
"The ceiling of a memoryless policy").

usage: python tools/imitation_ceiling.py NAME TOTAL_S CHUNK_S [STUDENT_S SUPPORT [OVERRIDES]]

No meta-learning and no inference: the demo's policy (2x64 tanh MLP, config/demo_maml.yaml) gets a
task context that is the true task code (`tasks.task_code`) and the family one-hot, and
learns by DAgger (Ross et al. 2011) in-process: each iteration runs one episode of 120
training tasks (a 3000-task pool) with the current policy, labels every visited state with the
scripted expert (`world.observed_expert`), and takes 10 epochs x 8 minibatches of Adam
(1e-3) on the imitation loss. Every CHUNK_S seconds it scores the 24 held-out tasks (4
episodes each, mean action with the log-std at its floor) normalised by the scripted
controller, and prints one EVAL line: seconds, iterations, env steps, overall, per family.

With STUDENT_S, the trained policy (the teacher) is then frozen and a task encoder
(`meta.encoder`, fresh) learns for STUDENT_S seconds to infer the true context from 6 support
episodes per task, by regression onto it (Kumar et al. 2021, RMA), on 120 new training tasks
per round and 40 Adam steps (3e-3, 24 tasks each) per round. SUPPORT says how the support
episodes act: `prior`, every episode with the family's mean context (the meta-policy's
guess); `sample`, each episode as a randomly drawn training task of the family (posterior
sampling: acting on one hypothesis per episode, the rewards confirm or refute it; Rakelly et
al. 2019, PEARL). It prints the held-out context error (next to that of the family's mean
context) and the score after one inference from 10 support episodes, acting with the mean
action and with sampled actions.
"""

import json
import sys
import time

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.envs.rollouts import collect
from avatar_meta.meta.encoder import encoder_adapt, init_encoder
from avatar_meta.rl import Policy, update_obs_stats
from avatar_meta.rl.losses import GuidedBatch, RLBatch, make_guided_loss, stack_batches
from avatar_meta.tasks import TASK_CODE_SIZE, Task, task_code
from avatar_meta.training.baselines import normalised_score, random_returns
from avatar_meta.training.common import (
    all_obs,
    make_env,
    per_task_policy_fn,
    rollout_to_batch,
    rollouts_to_guided,
)
from avatar_meta.training.oracle_check import scripted_returns

torch.set_num_threads(1)
name, total, chunk = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
student_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
support_arg = sys.argv[5] if len(sys.argv) > 5 else "both"
support_modes = ["prior", "sample"] if support_arg == "both" else [support_arg]
extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
N_FAMILIES, TASKS_PER_ITERATION, EPOCHS, MINIBATCHES = 6, 120, 10, 8
overrides = {
    "env.inprocess": True,
    "policy.context_size": TASK_CODE_SIZE + N_FAMILIES,
    "tasks.n_train": 3000,  # the student memorises a small pool (docs/training.md)
    **extra,
}
config = load_config("config/demo_maml.yaml", overrides)
dist = config.task_distribution()
heldout = dist.heldout()
env = make_env(config)
random_ref = random_returns(env, heldout, 8, 0)[0]
scripted_ref = scripted_returns(heldout, 8, 0)
policy = Policy(config.policy_spec())
init, buffers = policy.init(seed=0)
params = {k: v.clone().requires_grad_(True) for k, v in init.items() if k != "actor.context"}
optimizer = torch.optim.Adam(params.values(), lr=1e-3, eps=1e-5)
generator = torch.Generator().manual_seed(0)
rng = np.random.default_rng(0)


def true_context(task: Task) -> torch.Tensor:
    family = np.eye(N_FAMILIES)[task.family_index]
    return torch.tensor(np.concatenate([task_code(task), family]), dtype=torch.float32)


def per_task(
    tasks: list[Task], low_noise: bool = False, contexts: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The shared weights stacked per task, each with its true context (or `contexts`)."""
    k = len(tasks)
    out = {n: v.unsqueeze(0).expand(k, *v.shape) for n, v in params.items()}
    out["actor.context"] = (
        torch.stack([true_context(t) for t in tasks]) if contexts is None else contexts
    )
    if low_noise:  # the softplus floor makes this the floor's std (0.135)
        out["actor.log_std"] = torch.full((k, 2), -20.0)
    return out


def score(
    contexts: torch.Tensor | None = None, low_noise: bool = True
) -> tuple[float, dict[str, float]]:
    with torch.no_grad():
        act = per_task_policy_fn(policy, per_task(heldout, low_noise, contexts), buffers, generator)
        returns = np.array([r.episode_return.mean() for r in collect(env, act, heldout, 4)])
    scores = normalised_score(returns, np.array(random_ref), np.array(scripted_ref))
    family = np.array([t.family for t in heldout])
    by_family = {f: round(float(np.nanmean(scores[family == f])), 2) for f in sorted(set(family))}
    return round(float(np.nanmean(scores)), 3), by_family


def take(batch: GuidedBatch, index: torch.Tensor) -> GuidedBatch:
    rl = RLBatch(*(x[index] for x in batch.rl))
    return GuidedBatch(
        rl, batch.expert_cont[index], batch.expert_gesture[index], batch.task_code[index]
    )


start, iterations, env_steps, next_report = time.perf_counter(), 0, 0, chunk
while True:
    elapsed = time.perf_counter() - start
    if elapsed >= next_report:
        overall, by_family = score()
        print("EVAL", name, round(elapsed), iterations, env_steps, overall, by_family, flush=True)
        next_report += chunk
        if elapsed >= total:
            break
    tasks = dist.sample_train(rng, TASKS_PER_ITERATION)
    with torch.no_grad():
        act = per_task_policy_fn(policy, per_task(tasks), buffers, generator)
        rollouts = collect(env, act, tasks, 1)
    env_steps += sum(r.env_steps for r in rollouts)
    batch = rollouts_to_guided(rollouts, config.meta.gamma, config.meta.gae_lambda)
    loss_fn = torch.func.vmap(make_guided_loss(policy, buffers, None))
    for _ in range(EPOCHS):
        for part in torch.randperm(len(tasks), generator=generator).chunk(MINIBATCHES):
            chosen = [tasks[i] for i in part.tolist()]
            loss = loss_fn(per_task(chosen), take(batch, part)).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
    buffers = update_obs_stats(buffers, all_obs(rollouts))
    iterations += 1

if student_s <= 0:
    sys.exit(0)
# ------------------------------------------------------------------------- the student
params = {k: v.detach() for k, v in params.items()}
train_by_family: dict[str, list[Task]] = {}
for t in dist.train_tasks():
    train_by_family.setdefault(t.family, []).append(t)
family_prior = {
    f: torch.stack([true_context(t) for t in ts]).mean(0) for f, ts in train_by_family.items()
}


def priors(tasks: list[Task]) -> torch.Tensor:
    return torch.stack([family_prior[t.family] for t in tasks])


def support(tasks: list[Task], episodes: int, support_mode: str) -> RLBatch:
    """Each task's support episodes, acting as `support_mode` says (one collect per episode,
    so that every episode can act on its own hypothesis)."""
    rows: list[list[RLBatch]] = [[] for _ in tasks]
    for _ in range(episodes):
        if support_mode == "prior":
            contexts = priors(tasks)
        else:
            drawn = [train_by_family[t.family] for t in tasks]
            contexts = torch.stack([true_context(d[int(rng.integers(len(d)))]) for d in drawn])
        act = per_task_policy_fn(policy, per_task(tasks, False, contexts), buffers, generator)
        for i, rollout in enumerate(collect(env, act, tasks, 1)):
            rows[i].append(rollout_to_batch(rollout, config.meta.gamma, config.meta.gae_lambda))
    return stack_batches([RLBatch(*(torch.cat(f) for f in zip(*r, strict=True))) for r in rows])


def infer(encoder: dict[str, torch.Tensor], batch: RLBatch, prior: torch.Tensor) -> torch.Tensor:
    def one(b: RLBatch, p: torch.Tensor) -> torch.Tensor:
        adapted = encoder_adapt({**encoder, "actor.context": p}, b, policy=policy, buffers=buffers)
        return adapted["actor.context"]

    return torch.func.vmap(one)(batch, prior)


def student(support_mode: str) -> None:
    encoder = {k: v.requires_grad_(True) for k, v in init_encoder(policy.spec, 64, 0).items()}
    encoder_optimizer = torch.optim.Adam(encoder.values(), lr=3e-3)
    rounds: list[tuple[RLBatch, list[Task]]] = []
    start = time.perf_counter()
    while time.perf_counter() - start < student_s:
        tasks = dist.sample_train(rng, TASKS_PER_ITERATION)
        rounds.append((support(tasks, 6, support_mode), tasks))
        for _ in range(40):
            support_batch, tasks = rounds[int(rng.integers(len(rounds)))]
            picked = torch.randperm(len(tasks), generator=generator)[:24]
            chosen = [tasks[i] for i in picked.tolist()]
            target = torch.stack([true_context(t) for t in chosen])
            sub = RLBatch(*(x[picked] for x in support_batch))
            loss = (infer(encoder, sub, priors(chosen)) - target).square().mean()
            encoder_optimizer.zero_grad()
            loss.backward()
            encoder_optimizer.step()
    held_batch = support(heldout, 10, support_mode)
    with torch.no_grad():
        inferred = infer({k: v.detach() for k, v in encoder.items()}, held_batch, priors(heldout))
    truth = torch.stack([true_context(t) for t in heldout])
    error = float((inferred - truth).square().mean())
    baseline = float((priors(heldout) - truth).square().mean())
    tag = f"STUDENT {name} {support_mode}:"
    print(tag, len(rounds), "rounds; held-out context error", round(error, 4), end=" ")
    print("(family mean", round(baseline, 4), ")", flush=True)
    print(tag, "inferred, mean action", *score(inferred), flush=True)
    print(tag, "inferred, sampled actions", *score(inferred, False), flush=True)


print(f"STUDENT {name} family mean context, mean action", *score(priors(heldout)), flush=True)
for mode in support_modes:
    student(mode)
