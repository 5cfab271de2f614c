"""Reptile: move the initialisation towards the parameters each task's training reaches.

Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning Algorithms" (arXiv:1803.02999).

    phi_i   = SGD^k(theta; task i)                  (k steps, minibatches cycled)
    theta  <- theta + epsilon * mean_i (phi_i - theta)

No second-order term and no query set: the support batch is all the task data (in meta-RL:
the task's episodes, trained with PPO-style epochs/minibatches). `reptile_update` is that
update as a pure function. `reptile_meta_loss` is the surrogate
0.5 * mean_i ||theta - stopgrad(phi_i)||^2, whose gradient is theta - mean_i phi_i, so any
optimiser can drive Reptile like the other learners (SGD with lr = epsilon reproduces
`reptile_update` exactly; Adam is a common, different choice).

Gotchas
- Reptile needs k > 1 inner steps: with k = 1 on full batches it reduces to joint training
  on the average loss (no meta-learning). Minibatches make even k steps informative.
- It "barely adapted in one step" in the calibration run (design section 6): Reptile learns
  an initialisation that is good after *k* steps of its inner optimiser; evaluate it that way.
- Anneal epsilon (the paper: linearly 1 -> 0) for the best final initialisation.
- The paper's inner optimiser is Adam (beta1 = 0); this implementation uses plain SGD, which
  is vmap-friendly and stateless.
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
    detach_params,
    inner_grad,
    map_tasks,
    minibatch,
    select_keys,
    sgd_step,
)


@dataclass(frozen=True)
class ReptileConfig:
    """Hyperparameters of Reptile."""

    inner_lr: float = 0.1
    """SGD step size of the inner loop."""
    inner_steps: int = 8
    """Inner SGD steps per task (k); must be > 1 for Reptile to differ from joint training."""
    minibatches: int = 4
    """Contiguous minibatches per pass over the task data (steps cycle through them)."""
    epsilon: float = 0.1
    """Outer step size: theta += epsilon * (mean phi - theta)."""
    adapt_prefix: str | None = None
    """Train (and move) only parameters starting with this; None = all."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (False = per-task Python loop, same numbers)."""


def reptile_adapt(
    params: Params,
    support: Any,
    *,
    inner_loss: LossFn,
    cfg: ReptileConfig,
    steps: int | None = None,
) -> Params:
    """phi: `steps` first-order SGD steps on one task, cycling through minibatches.
    The result carries no gradient to params."""
    n = cfg.inner_steps if steps is None else steps
    keys = select_keys(params, cfg.adapt_prefix)
    phi = detach_params(params)
    for k in range(n):
        batch = minibatch(support, k % cfg.minibatches, cfg.minibatches)
        phi = sgd_step(
            phi, inner_grad(inner_loss, phi, batch, keys, first_order=True), cfg.inner_lr
        )
    return detach_params(phi)


def _adapt_all(params: Params, supports: Any, inner_loss: LossFn, cfg: ReptileConfig) -> Params:
    fn = partial(reptile_adapt, inner_loss=inner_loss, cfg=cfg)
    with torch.no_grad():
        out: Params = map_tasks(fn, (None, 0), cfg.use_vmap)(params, supports)
    return out


def reptile_update(
    params: Params, supports: Any, *, inner_loss: LossFn, cfg: ReptileConfig
) -> Params:
    """New initialisation theta + epsilon * (mean_i phi_i - theta) (no gradient)."""
    phis = _adapt_all(params, supports, inner_loss, cfg)
    with torch.no_grad():
        return {k: p + cfg.epsilon * (phis[k].mean(0) - p) for k, p in params.items()}


def reptile_meta_loss(
    params: Params, tasks: TaskBatch | Any, *, inner_loss: LossFn, cfg: ReptileConfig
) -> Tensor:
    """Surrogate 0.5 * mean_i sum ||theta - stopgrad(phi_i)||^2; gradient = theta - mean phi.
    Accepts a TaskBatch (uses its support) or a task-stacked support batch."""
    supports = tasks.support if isinstance(tasks, TaskBatch) else tasks
    phis = _adapt_all(params, supports, inner_loss, cfg)
    sq = [(params[k] - phis[k]).square().flatten(1).sum(1) for k in phis]
    return 0.5 * torch.stack(sq).sum(0).mean()


@dataclass(frozen=True)
class Reptile:
    """Reptile bound to its inner loss (in meta-RL: PPO-clip over the task's episodes)."""

    inner_loss: LossFn
    """Task loss `(params, batch) -> scalar` optimised by the inner SGD."""
    config: ReptileConfig = field(default_factory=ReptileConfig)
    """Hyperparameters."""
    forward: ForwardFn | None = None
    """Model as a pure function, for `Learner.__call__`."""

    def adapt(self, params: Params, support: Any, steps: int | None = None) -> Params:
        """phi for one task (k SGD steps)."""
        return reptile_adapt(
            params, support, inner_loss=self.inner_loss, cfg=self.config, steps=steps
        )

    def adapt_tasks(self, params: Params, supports: Any, steps: int | None = None) -> Params:
        """phi for every task, stacked [K, ...]."""
        fn = partial(self.adapt, steps=steps)
        with torch.no_grad():
            out: Params = map_tasks(fn, (None, 0), self.config.use_vmap)(params, supports)
        return out

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """The surrogate whose gradient is theta - mean phi (see module doc)."""
        return reptile_meta_loss(params, tasks, inner_loss=self.inner_loss, cfg=self.config)

    def update(self, params: Params, supports: Any) -> Params:
        """The Reptile step itself: theta + epsilon * (mean phi - theta)."""
        return reptile_update(params, supports, inner_loss=self.inner_loss, cfg=self.config)

    def step_size(self, step: int) -> StepSize:
        return self.config.inner_lr

    def clone(self, params: Params) -> Learner:
        """First-order learner (Reptile never differentiates through adaptation)."""
        return Learner(
            params,
            self.inner_loss,
            self.step_size,
            keys=select_keys(params, self.config.adapt_prefix),
            first_order=True,
            forward=self.forward,
        )
