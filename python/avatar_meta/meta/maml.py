"""MAML and first-order MAML as pure functions, batched over tasks with `torch.func.vmap`.

Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks" (ICML). For each task i:

    theta_i' = theta - alpha_k * grad_theta L_support_i(theta)      (k = 0..steps-1)
    meta-loss = mean_i L_query_i(theta_i')

and the meta-gradient differentiates through the inner steps (second order: it contains
Hessian-vector products of the support loss). FOMAML (same paper, section 5.2) detaches the
inner gradient, so d theta_i' / d theta = I and the meta-gradient is the query gradient at the
adapted parameters.

Meta-RL use (design section 6): inner loss = vanilla PG with normalised GAE advantages on the
task's support episodes (collected with theta), outer loss = PPO-clip on query episodes
collected *with the adapted policy*. The trainer therefore calls, per meta-iteration:

    adapted = maml.adapt_tasks(params, support)          # [K, ...] per-task params
    query   = collect(task_slice(adapted, i) for each task i)
    loss    = maml.meta_loss(params, TaskBatch(support, query))   # re-adapts differentiably
    grads, loss = maml.meta_grad(params, TaskBatch(support, query))

`old_log_prob` in the query batch is the adapted policy's log-prob at collection, so the first
outer epoch has ratio 1; several outer PPO epochs reuse the same query batch.

Gotchas
- The support data is a constant: the meta-gradient does not include the dependence of
  the sampling distribution on theta (that is what ProMP/DiCE add). With PPO-clip outer it
  is stable in practice (measured, design section 6).
- alpha ~ 0.5 only makes sense because the PG inner loss normalises advantages per task.
- Repeating the same alpha for inner steps 2-3 diverges on PG: `inner_lr_decay` (default 0.5)
  shrinks later steps, or learn the sizes with Meta-SGD.
- Only the actor needs adapting (`adapt_prefix="actor."`): PG gives the critic zero gradient
  anyway, and skipping it saves compute. The outer PPO value loss trains the critic.
- FOMAML oscillated in the calibration run; prefer second order unless memory-bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from avatar_meta.meta.core import (
    ForwardFn,
    Learner,
    LossFn,
    Params,
    StepSize,
    TaskBatch,
    adapt,
    map_tasks,
    select_keys,
    step_sizes,
)


@dataclass(frozen=True)
class MAMLConfig:
    """Hyperparameters of (FO)MAML."""

    inner_lr: float = 0.5
    """alpha of the first inner step (0.5 suits PG on normalised advantages; 0.01 for the
    sinusoid regression of the paper)."""
    inner_lr_decay: float = 0.5
    """Inner step k uses inner_lr * inner_lr_decay**k."""
    inner_steps: int = 1
    """Inner steps during meta-training (adaptation at test time may use more)."""
    first_order: bool = False
    """FOMAML: detach the inner gradient (no second-order term)."""
    adapt_prefix: str | None = None
    """Adapt only parameters whose name starts with this (e.g. "actor."); None = all."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (False = per-task Python loop, same numbers)."""


def maml_adapt(
    params: Params,
    support: Any,
    *,
    inner_loss: LossFn,
    cfg: MAMLConfig,
    steps: int | None = None,
) -> Params:
    """Adapted parameters for one task (differentiable w.r.t. params unless first order)."""
    n = cfg.inner_steps if steps is None else steps
    lrs = step_sizes(cfg.inner_lr, n, cfg.inner_lr_decay)
    keys = select_keys(params, cfg.adapt_prefix)
    return adapt(inner_loss, params, support, lrs, keys, cfg.first_order)


def maml_task_loss(
    params: Params,
    support: Any,
    query: Any,
    *,
    inner_loss: LossFn,
    outer_loss: LossFn,
    cfg: MAMLConfig,
) -> Tensor:
    """Query loss of one task after adapting on its support batch."""
    return outer_loss(maml_adapt(params, support, inner_loss=inner_loss, cfg=cfg), query)


def maml_meta_loss(
    params: Params, tasks: TaskBatch, *, inner_loss: LossFn, outer_loss: LossFn, cfg: MAMLConfig
) -> Tensor:
    """mean over tasks of the post-adaptation query loss (tasks stacked on dim 0)."""
    per_task = partial(maml_task_loss, inner_loss=inner_loss, outer_loss=outer_loss, cfg=cfg)
    losses: Tensor = map_tasks(per_task, (None, 0, 0), cfg.use_vmap)(
        params, tasks.support, tasks.query
    )
    return losses.mean()


@dataclass(frozen=True)
class MAML:
    """(FO)MAML bound to its losses. Stateless: parameters are always passed in.

    `forward(params, *inputs)` is optional and only used by `clone(...)(inputs)`.
    """

    inner_loss: LossFn
    """Support-set loss `(params, batch) -> scalar` (meta-RL: vanilla PG)."""
    outer_loss: LossFn
    """Query-set loss `(params, batch) -> scalar` (meta-RL: PPO-clip)."""
    config: MAMLConfig = field(default_factory=MAMLConfig)
    """Hyperparameters."""
    forward: ForwardFn | None = None
    """Model as a pure function, for `Learner.__call__`."""

    def adapt(self, params: Params, support: Any, steps: int | None = None) -> Params:
        """Adapted parameters for one task."""
        return maml_adapt(params, support, inner_loss=self.inner_loss, cfg=self.config, steps=steps)

    def adapt_tasks(self, params: Params, supports: Any, steps: int | None = None) -> Params:
        """Adapted parameters for every task of a task-stacked support batch: [K, ...] per
        entry (take one with `core.task_slice`). No gradient is kept: this is for
        collecting query rollouts."""
        with torch.no_grad():
            fn = partial(self.adapt, steps=steps)
            out: Params = map_tasks(fn, (None, 0), self.config.use_vmap)(params, supports)
        return out

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """Mean post-adaptation query loss; differentiate w.r.t. params for the meta-gradient."""
        return maml_meta_loss(
            params, tasks, inner_loss=self.inner_loss, outer_loss=self.outer_loss, cfg=self.config
        )

    def meta_grad(self, params: Params, tasks: TaskBatch) -> tuple[Params, Tensor]:
        """(meta-gradient dict, meta-loss) via `torch.func.grad_and_value`."""
        grads, loss = torch.func.grad_and_value(self.meta_loss)(params, tasks)
        return grads, loss

    def step_size(self, step: int) -> StepSize:
        return self.config.inner_lr * self.config.inner_lr_decay**step

    def clone(self, params: Params) -> Learner:
        """learn2learn-style handle on `params` (leaf tensors requiring grad for meta-training)."""
        return Learner(
            params,
            self.inner_loss,
            self.step_size,
            keys=select_keys(params, self.config.adapt_prefix),
            first_order=self.config.first_order,
            forward=self.forward,
        )
