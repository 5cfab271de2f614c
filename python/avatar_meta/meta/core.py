"""Functional pieces shared by the meta-learners, and the learn2learn-style object API.

Vocabulary
- `Params`: `dict[str, Tensor]`, the parameters of any model written as a pure function.
- batch: any pytree of tensors (an `RLBatch`, an `(x, y)` tuple, ...). One task's batch has
  its natural shape; a task-stacked batch adds a leading task dimension [K, ...] and all tasks
  must have the same size (pad with zero weights, see `rl.losses.stack_batches`).
- `LossFn`: `(params, batch) -> scalar Tensor`, pure (no `.item()`, no data-dependent Python
  control flow), so that `torch.func.grad` and `vmap` compose with it.
- `TaskBatch(support, query)`: task-stacked support and query batches.

Every algorithm computes per-task quantities with `map_tasks`, which runs either
`torch.func.vmap` or a plain Python loop over tasks with identical semantics (the loop is
the reference the tests compare `vmap` against, and the fallback for losses that cannot be
vmapped).

Second-order gradients: `torch.func.grad` is differentiable by composition. `adapt` below
calls it for the inner step; wrapping the meta-loss in another `torch.func.grad` (or calling
`.backward()` on it with leaf tensors that require grad) differentiates *through* the inner
step, Hessian-vector products included, like `torch.autograd.grad(create_graph=True)`.
Detaching the inner gradient (`first_order=True`) drops exactly the second-order term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from avatar_meta.rl.losses import PPOConfig, make_pg_loss, make_ppo_loss
from avatar_meta.rl.policy import Buffers, Policy

Params = dict[str, Tensor]
LossFn = Callable[[Params, Any], Tensor]
ForwardFn = Callable[..., Any]
"""`forward(params, *inputs)`: the model as a pure function (used by `Learner.__call__`)."""
StepSize = float | Tensor | Params
"""An inner step size: one number for all parameters, or a tensor per parameter (Meta-SGD)."""


class TaskBatch(NamedTuple):
    """Task-stacked support and query batches (leading dimension = tasks)."""

    support: Any
    query: Any


class MetaLearner(Protocol):
    """What every gradient-based meta-learner offers (params may be a richer pytree, e.g.
    Meta-SGD's `(init, step sizes)`)."""

    def adapt(self, params: Any, support: Any, steps: int | None = None) -> Params:
        """Task-specific parameters after `steps` inner updates on one task's support batch."""
        ...

    def meta_loss(self, params: Any, tasks: TaskBatch) -> Tensor:
        """Scalar meta-objective over task-stacked batches; differentiate it w.r.t. params."""
        ...


# ---------------------------------------------------------------------------------------------
# pytrees over tasks
# ---------------------------------------------------------------------------------------------
def num_tasks(tree: Any) -> int:
    """Size of the leading (task) dimension of a task-stacked pytree."""
    leaves = pytree.tree_leaves(tree)
    if not leaves:
        raise ValueError("empty task batch")
    return int(leaves[0].shape[0])


def task_slice(tree: Any, i: int) -> Any:
    """Task i of a task-stacked pytree (also: one task's adapted params from `adapt_tasks`)."""
    return pytree.tree_map(lambda x: x[i], tree)


def stack_tasks(trees: Sequence[Any]) -> Any:
    """Stack same-shaped per-task pytrees along a new leading task dimension."""
    return pytree.tree_map(lambda *xs: torch.stack(xs), trees[0], *trees[1:])


def map_tasks(
    fn: Callable[..., Any], in_dims: tuple[int | None, ...], use_vmap: bool = True
) -> Callable[..., Any]:
    """`fn` mapped over the task dimension of the arguments whose in_dim is 0.

    `use_vmap=True` is `torch.func.vmap(fn, in_dims)`; `False` loops over tasks and stacks
    the outputs. Both return the same pytree with a leading task dimension.
    """
    if any(d not in (0, None) for d in in_dims):
        raise ValueError("map_tasks supports in_dims of 0 or None only")
    if use_vmap:
        return torch.func.vmap(fn, in_dims=in_dims)

    def looped(*args: Any) -> Any:
        mapped = [a for a, d in zip(args, in_dims, strict=True) if d == 0]
        k = num_tasks(mapped)
        outs = []
        for i in range(k):
            call = [task_slice(a, i) if d == 0 else a for a, d in zip(args, in_dims, strict=True)]
            outs.append(fn(*call))
        return stack_tasks(outs)

    return looped


# ---------------------------------------------------------------------------------------------
# inner loop
# ---------------------------------------------------------------------------------------------
def select_keys(params: Params, prefix: str | None) -> tuple[str, ...]:
    """Names of the parameters the inner loop adapts (all, or those starting with prefix)."""
    keys = tuple(k for k in params if prefix is None or k.startswith(prefix))
    if not keys:
        raise ValueError(f"no parameter name starts with {prefix!r}")
    return keys


def step_sizes(alpha: float, steps: int, decay: float = 1.0) -> tuple[float, ...]:
    """alpha * decay**k for k = 0..steps-1 (repeating one PG step size over 2-3 steps
    diverges; a decay of ~0.5 or learned sizes (Meta-SGD) keep it stable)."""
    return tuple(alpha * decay**k for k in range(steps))


def inner_grad(
    loss_fn: LossFn,
    params: Params,
    batch: Any,
    keys: Sequence[str] | None = None,
    first_order: bool = False,
) -> Params:
    """Gradient of `loss_fn(params, batch)` w.r.t. `params[keys]` via `torch.func.grad`.

    Differentiable by composition (second order) unless `first_order`, which detaches it.
    """
    keys = tuple(params) if keys is None else tuple(keys)
    fixed = {k: v for k, v in params.items() if k not in keys}

    def sub_loss(sub: Params) -> Tensor:
        return loss_fn({**fixed, **sub}, batch)

    grads: Params = torch.func.grad(sub_loss)({k: params[k] for k in keys})
    if first_order:
        grads = {k: g.detach() for k, g in grads.items()}
    return grads


def sgd_step(params: Params, grads: Params, lr: StepSize) -> Params:
    """params - lr * grads for the keys in grads (others unchanged); lr may be per-parameter."""
    out = dict(params)
    for k, g in grads.items():
        step = lr[k] if isinstance(lr, dict) else lr
        out[k] = params[k] - step * g
    return out


def adapt(
    loss_fn: LossFn,
    params: Params,
    batch: Any,
    lrs: Sequence[StepSize],
    keys: Sequence[str] | None = None,
    first_order: bool = False,
) -> Params:
    """`len(lrs)` gradient steps on one task's batch: the inner loop of MAML/Meta-SGD."""
    for lr in lrs:
        params = sgd_step(params, inner_grad(loss_fn, params, batch, keys, first_order), lr)
    return params


def minibatch(batch: Any, index: int, count: int) -> Any:
    """Contiguous minibatch `index` of `count` along each leaf's first (row) dimension."""
    if count == 1:
        return batch
    size = int(pytree.tree_leaves(batch)[0].shape[0]) // count
    return pytree.tree_map(lambda x: x[index * size : (index + 1) * size], batch)


def detach_params(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def leaf_params(params: Params) -> Params:
    """Fresh leaf copies that require grad (for optimisers and the object API)."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


def assign_grads(params: Params, grads: Params) -> None:
    """Write functional gradients into `.grad` of leaf params (then `optimizer.step()`)."""
    for k, g in grads.items():
        params[k].grad = g.detach().clone()


def policy_losses(
    policy: Policy, buffers: Buffers, ppo: PPOConfig | None = None
) -> tuple[LossFn, LossFn]:
    """The meta-RL pair (inner, outer) = (vanilla PG on normalised GAE advantages, PPO-clip),
    bound to a policy and its current normalisation buffers. Rebuild it when the buffers
    change (cheap: it only binds arguments)."""
    return make_pg_loss(policy, buffers), make_ppo_loss(policy, buffers, ppo)


# ---------------------------------------------------------------------------------------------
# object API (learn2learn style)
# ---------------------------------------------------------------------------------------------
class Learner:
    """A task-specific, differentiable copy of the meta-parameters.

    ```
    learner = maml.clone(meta_params)       # meta_params: leaf tensors requiring grad
    learner.adapt(support_batch)            # or a loss tensor, or a `params -> loss` callable
    loss = outer_loss(learner.params, query_batch)   # or learner(obs) for predictions
    loss.backward()                         # meta-gradient lands in meta_params[...].grad
    ```
    With leaf meta-parameters the inner gradient uses `torch.autograd.grad(create_graph=...)`
    (exactly learn2learn's semantics); without (plain tensors, e.g. deployment-time
    adaptation) it uses `torch.func.grad`, and passing a loss tensor is not possible.
    """

    def __init__(
        self,
        params: Params,
        inner_loss: LossFn,
        step_size: Callable[[int], StepSize],
        *,
        keys: Sequence[str] | None = None,
        first_order: bool = False,
        forward: ForwardFn | None = None,
    ) -> None:
        self.params: Params = dict(params)
        self.inner_loss = inner_loss
        self.step_size = step_size
        self.keys = tuple(params) if keys is None else tuple(keys)
        self.first_order = first_order
        self.forward = forward
        self.steps_taken = 0

    def adapt(self, data: Any) -> Learner:
        """One inner step. `data`: a batch (uses the inner loss), a `params -> loss` callable,
        or a scalar loss tensor already computed from `self.params`."""
        lr = self.step_size(self.steps_taken)
        sub = [self.params[k] for k in self.keys]
        if any(p.requires_grad for p in sub):
            loss = data if isinstance(data, Tensor) else self._loss_fn(data)(self.params)
            raw = torch.autograd.grad(
                loss, sub, create_graph=not self.first_order, allow_unused=True
            )
            grads = {
                k: torch.zeros_like(p) if g is None else g
                for k, p, g in zip(self.keys, sub, raw, strict=True)
            }
        else:
            if isinstance(data, Tensor):
                raise TypeError("pass a batch or a callable when params do not require grad")
            fn = self._loss_fn(data)
            grads = inner_grad(lambda p, _: fn(p), self.params, None, self.keys, self.first_order)
        self.params = sgd_step(self.params, grads, lr)
        self.steps_taken += 1
        return self

    def _loss_fn(self, data: Any) -> Callable[[Params], Tensor]:
        if callable(data):
            return data  # type: ignore[no-any-return]
        return lambda p: self.inner_loss(p, data)

    def __call__(self, *inputs: Any) -> Any:
        if self.forward is None:
            raise TypeError("this learner was cloned without a forward function")
        return self.forward(self.params, *inputs)
