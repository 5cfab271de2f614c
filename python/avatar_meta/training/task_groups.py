"""Per-family meta-batches: which tasks of a stacked batch start from which meta-policy.

A meta-batch mixes families; each family has its own meta-policy (`meta.per_family`), so the
loop and the held-out evaluation split task-stacked pytrees by policy key, run each group's
learner on its slice (vmap within a group) and scatter the results back into task order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from avatar_meta.meta import TaskBatch
from avatar_meta.rl import Params


def task_groups(keys: list[str]) -> dict[str, torch.Tensor]:
    """Policy key -> indices of the meta-batch's tasks that start from it (sorted keys)."""
    return {
        key: torch.tensor([i for i, k in enumerate(keys) if k == key], dtype=torch.long)
        for key in sorted(set(keys))
    }


def take_tasks(batch: Any, index: torch.Tensor) -> Any:
    """The tasks `index` of a task-stacked pytree (None stays None)."""
    if batch is None:
        return None
    return pytree.tree_map(lambda x: x[index], batch)


def scatter_tasks(parts: dict[str, Params], groups: dict[str, torch.Tensor], k: int) -> Params:
    """Inverse of `take_tasks` over all groups: per-group stacked params -> [k, ...]."""
    first = next(iter(parts.values()))
    out = {n: v.new_zeros((k, *v.shape[1:])) for n, v in first.items()}
    for key, index in groups.items():
        for n in out:
            out[n][index] = parts[key][n]
    return out


def task_minibatches(
    batch: TaskBatch, minibatches: int, generator: torch.Generator
) -> list[TaskBatch]:
    """The tasks of a task-stacked batch shuffled and split into `minibatches` near-equal
    groups (1 = the whole batch, unshuffled): one outer Adam step per group, so an outer epoch
    takes `minibatches` steps for the price of one full-batch meta-gradient."""
    k = int(batch.support.obs.shape[0])
    n = max(1, min(minibatches, k))
    if n == 1:
        return [batch]
    perm = torch.randperm(k, generator=generator)
    return [
        TaskBatch(*(pytree.tree_map(lambda x, i=idx: x[i], part) for part in batch))
        for idx in torch.tensor_split(perm, n)
    ]
