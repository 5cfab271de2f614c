"""Offline check of the task encoder's inference (docs/training.md, "Task inference").

usage: python tools/inference_check.py CHECKPOINT FAMILY N_TRAIN
CHECKPOINT: a per-family checkpoint of a policy with a task context (maml or encoder, e.g.
results/demo/checkpoints/maml.pt); only its meta-policy is used, to collect support episodes.
Collects 3 support sets (6 episodes each, in-process) for every training task of FAMILY in a
pool of N_TRAIN tasks with the checkpoint's meta-policy, and one for each held-out task; then
trains a fresh encoder only on the supervised task-code loss (Adam 3e-3, 16 tasks per step,
600 steps) and prints training and held-out code error next to the held-out codes' variance
(the error of predicting the mean). With N_TRAIN 120 the held-out error stays at the variance
(memorised); with 3000 it follows the training error.
"""

import sys
import time

import numpy as np
import torch

from avatar_meta.config import load_config
from avatar_meta.envs.rollouts import collect
from avatar_meta.meta.core import map_tasks
from avatar_meta.meta.encoder import encoder_adapt, init_encoder
from avatar_meta.rl import Policy, RLBatch
from avatar_meta.tasks import TASK_CODE_SIZE, task_code
from avatar_meta.training.checkpoints import load_checkpoint
from avatar_meta.training.common import make_env, per_task_policy_fn, rollouts_to_tasks

torch.set_num_threads(1)
path, family, n_train = sys.argv[1], sys.argv[2], int(sys.argv[3])
overrides = {"env.inprocess": True, "meta.algorithms": ["encoder"], "tasks.n_train": n_train}
config = load_config("config/demo_maml.yaml", overrides)
ck = load_checkpoint(path)
policy = Policy(config.policy_spec())
buffers = ck["buffers"]
meta_policy = ck["params_by_key"][family]
dist = config.task_distribution()


def support_sets(tasks: list, seed: int) -> tuple[RLBatch, torch.Tensor]:
    env = make_env(config)
    stacked = {n: v[None].expand(len(tasks), *v.shape) for n, v in meta_policy.items()}
    act = per_task_policy_fn(policy, stacked, buffers, torch.Generator().manual_seed(seed))
    batch = rollouts_to_tasks(collect(env, act, tasks, 6), config.meta.gamma, 0.95)
    env.close()
    return batch, torch.tensor(np.stack([task_code(t) for t in tasks]))


train = [t for t in dist.train_tasks() if t.family == family]
held = [t for t in dist.heldout() if t.family == family]
train_sets = [support_sets(train, seed) for seed in range(3)]
held_batch, held_codes = support_sets(held, 99)
base = {k: v for k, v in meta_policy.items() if not k.startswith("encoder.")}
encoder = init_encoder(policy.spec, 64, 0, TASK_CODE_SIZE)
encoder = {k: v.clone().requires_grad_(True) for k, v in encoder.items()}
optimizer = torch.optim.Adam(encoder.values(), lr=3e-3)


def code_error(batch: RLBatch, codes: torch.Tensor) -> torch.Tensor:
    def decode(support: RLBatch) -> torch.Tensor:
        adapted = encoder_adapt({**base, **encoder}, support, policy=policy, buffers=buffers)
        weight, bias = adapted["encoder.decode.weight"], adapted["encoder.decode.bias"]
        return torch.nn.functional.linear(adapted["actor.context"], weight, bias)

    return (map_tasks(decode, (0,))(batch) - codes).square().mean()


start = time.time()
for step in range(601):
    batch, codes = train_sets[step % 3]
    idx = torch.randperm(len(train))[:16]
    loss = code_error(RLBatch(*(x[idx] for x in batch)), codes[idx])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 100 == 0:
        with torch.no_grad():
            held_error = float(code_error(held_batch, held_codes))
        print(
            f"{family} step {step}: train {float(loss.detach()):.4f} held-out {held_error:.4f} "
            f"(predicting the mean: {float(held_codes.var(0).mean()):.4f}) "
            f"{time.time() - start:.0f} s",
            flush=True,
        )
