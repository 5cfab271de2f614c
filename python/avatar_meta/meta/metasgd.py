"""Meta-SGD: MAML with learned per-parameter inner step sizes (optionally per inner step).

Li, Zhou, Chen, Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning".
The meta-parameters are `(theta, alpha)` where alpha has the shape of theta (one step size
per weight, direction included: it may become negative):

    theta_i' = theta - alpha_k (.) grad_theta L_support_i(theta)    (elementwise)

and both theta and alpha are trained by the meta-gradient of the query loss (which is linear
in alpha for one step, so alpha's gradient is cheap; theta's is second order as in MAML).

With `per_step=True` each inner step k has its own alpha_k: this is the "learned size for
steps 2-3" that keeps multi-step PG adaptation from diverging (design section 6). Initialise
them with a decay (`init_lr_decay`) so training starts from the stable MAML schedule.

Gotchas
- With alpha fixed to MAML's step sizes, Meta-SGD *is* MAML (a test checks this).
- Give alpha its own (smaller) outer learning rate if it moves too fast: it multiplies every
  inner gradient. The optimiser sees it as ordinary parameters in `MetaSGDParams.lrs`.
- Only parameters with a step size are adapted: build the step sizes for the actor alone
  (`adapt_prefix="actor."`) in meta-RL.
- Asking for more inner steps than there are learned step sets reuses the last set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor

from avatar_meta.meta.core import (
    ForwardFn,
    Learner,
    LossFn,
    Params,
    TaskBatch,
    adapt,
    leaf_params,
    map_tasks,
    select_keys,
)


@dataclass(frozen=True)
class MetaSGDConfig:
    """Hyperparameters of Meta-SGD."""

    init_lr: float = 0.5
    """Initial value of every step size (MAML's alpha)."""
    init_lr_decay: float = 0.5
    """With per_step, step set k starts at init_lr * init_lr_decay**k."""
    inner_steps: int = 1
    """Inner steps during meta-training."""
    per_step: bool = False
    """Learn a separate step-size set for each inner step (else one set for all steps)."""
    first_order: bool = False
    """Detach the inner gradient (alpha still gets its first-order gradient)."""
    adapt_prefix: str | None = None
    """Adapt (and learn step sizes for) only parameters starting with this; None = all."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (False = per-task Python loop, same numbers)."""


class MetaSGDParams(NamedTuple):
    """Meta-parameters of Meta-SGD: the initialisation and the step sizes (both trained)."""

    init: Params
    lrs: tuple[Params, ...]  # one dict per inner step (or a single shared one)


def init_metasgd(params: Params, cfg: MetaSGDConfig) -> MetaSGDParams:
    """Step sizes filled with init_lr (per step: init_lr * decay**k) for the adapted keys.
    Returns leaf tensors that require grad when `params` do."""
    keys = select_keys(params, cfg.adapt_prefix)
    sets = cfg.inner_steps if cfg.per_step else 1
    lrs = tuple(
        {k: torch.full_like(params[k].detach(), cfg.init_lr * cfg.init_lr_decay**s) for k in keys}
        for s in range(sets)
    )
    if any(p.requires_grad for p in params.values()):
        lrs = tuple(leaf_params(lr) for lr in lrs)
    return MetaSGDParams(params, lrs)


def metasgd_adapt(
    meta: MetaSGDParams,
    support: Any,
    *,
    inner_loss: LossFn,
    cfg: MetaSGDConfig,
    steps: int | None = None,
) -> Params:
    """Adapted parameters for one task using the learned step sizes."""
    n = cfg.inner_steps if steps is None else steps
    lrs = [meta.lrs[min(k, len(meta.lrs) - 1)] for k in range(n)]
    keys = tuple(meta.lrs[0])
    return adapt(inner_loss, meta.init, support, lrs, keys, cfg.first_order)


def metasgd_task_loss(
    meta: MetaSGDParams,
    support: Any,
    query: Any,
    *,
    inner_loss: LossFn,
    outer_loss: LossFn,
    cfg: MetaSGDConfig,
) -> Tensor:
    """Query loss of one task after adapting with the learned step sizes."""
    return outer_loss(metasgd_adapt(meta, support, inner_loss=inner_loss, cfg=cfg), query)


def metasgd_meta_loss(
    meta: MetaSGDParams,
    tasks: TaskBatch,
    *,
    inner_loss: LossFn,
    outer_loss: LossFn,
    cfg: MetaSGDConfig,
) -> Tensor:
    """Mean post-adaptation query loss over task-stacked batches."""
    per_task = partial(metasgd_task_loss, inner_loss=inner_loss, outer_loss=outer_loss, cfg=cfg)
    losses: Tensor = map_tasks(per_task, (None, 0, 0), cfg.use_vmap)(
        meta, tasks.support, tasks.query
    )
    return losses.mean()


@dataclass(frozen=True)
class MetaSGD:
    """Meta-SGD bound to its losses; `params` arguments are `MetaSGDParams`."""

    inner_loss: LossFn
    """Support-set loss `(params, batch) -> scalar`."""
    outer_loss: LossFn
    """Query-set loss `(params, batch) -> scalar`."""
    config: MetaSGDConfig = field(default_factory=MetaSGDConfig)
    """Hyperparameters."""
    forward: ForwardFn | None = None
    """Model as a pure function, for `Learner.__call__`."""

    def init(self, params: Params) -> MetaSGDParams:
        """Meta-parameters from an initialisation (step sizes at `config.init_lr`)."""
        return init_metasgd(params, self.config)

    def adapt(self, params: MetaSGDParams, support: Any, steps: int | None = None) -> Params:
        """Adapted parameters for one task."""
        return metasgd_adapt(
            params, support, inner_loss=self.inner_loss, cfg=self.config, steps=steps
        )

    def adapt_tasks(self, params: MetaSGDParams, supports: Any, steps: int | None = None) -> Params:
        """Adapted parameters for every task [K, ...], without gradient (for query rollouts)."""
        with torch.no_grad():
            fn = partial(self.adapt, steps=steps)
            out: Params = map_tasks(fn, (None, 0), self.config.use_vmap)(params, supports)
        return out

    def meta_loss(self, params: MetaSGDParams, tasks: TaskBatch) -> Tensor:
        """Mean post-adaptation query loss; differentiate w.r.t. init and lrs."""
        return metasgd_meta_loss(
            params, tasks, inner_loss=self.inner_loss, outer_loss=self.outer_loss, cfg=self.config
        )

    def meta_grad(self, params: MetaSGDParams, tasks: TaskBatch) -> tuple[MetaSGDParams, Tensor]:
        """(gradient with the structure of MetaSGDParams, meta-loss)."""
        grads, loss = torch.func.grad_and_value(self.meta_loss)(params, tasks)
        return MetaSGDParams(*grads), loss

    def clone(self, params: MetaSGDParams) -> Learner:
        """learn2learn-style handle; its step sizes are the (differentiable) learned ones."""
        lrs = params.lrs

        def step_size(step: int) -> Params:
            return lrs[min(step, len(lrs) - 1)]

        return Learner(
            params.init,
            self.inner_loss,
            step_size,
            keys=tuple(lrs[0]),
            first_order=self.config.first_order,
            forward=self.forward,
        )
