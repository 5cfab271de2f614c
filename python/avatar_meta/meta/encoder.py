"""Task-inference meta-RL: a learned encoder maps support transitions to the task context.

The amortised ("black-box") counterpart of CAVIA-style context adaptation. Where MAML with
`meta.adapt: context` moves the policy's task context by one policy-gradient step on the
support episodes, this learner computes the context in one forward pass over them:

    f_j  = [normalised obs s_j, action a_j, gesture one-hot, reward r_j, s'_j - s_j,
            normalised advantage A_j, symlog(return_j)]    one row per support transition
    h_j  = g_phi(f_j)                                       a small tanh MLP, shared by rows
    s    = [mean_j h_j, max_j h_j, mean_j A_j h_j]          permutation-invariant pooling
    c_i  = c_0 + W_out s + b_out                            the adapted task context

(Garnelo et al. 2018, "Conditional Neural Processes"; Rakelly et al. 2019, "PEARL", without
the stochastic latent; Zintgraf et al. 2019, "CAVIA", for the context the policy reads.)
The third pool is the policy-gradient step's own statistic generalised: one PG step on the
context moves it by mean_j A_j d log pi(a_j|s_j)/dc, a fixed function of (s, a) weighted by
the advantage; here the function is learned. `W_out` starts at zero, so before meta-training
the adapted policy is the meta-policy itself.

Meta-training is end to end: the outer loss (PPO-clip and/or imitation of the scripted
expert) of the *adapted* policy on its query episodes is differentiated through the context
into phi, the context prior c_0 and the policy. No second-order terms exist: the support data
are constants and adaptation is a forward pass.

Several adaptation steps: adapted params carry the pooled sums of every transition seen so far
(`encoder.seen.*`), and a further step pools the new batch *into* them, so step k infers the
context from all k batches (adapting on batch 1 then batch 2 equals adapting once on both).
The exported policy is the plain MLP: `rl.policy.fold_context` folds c_i into the first layer's
bias and exports ignore every `encoder.*` tensor.

Supervised task inference (Humplik et al. 2019, "Meta reinforcement learning as task
inference"): in meta-training the true hidden parameters are known (the world was told them),
so a linear decoder from the inferred context to the task's code (`tasks.task_code`) adds a
squared-error term to the outer loss. It teaches the encoder what to look for directly,
instead of only through the policy's imitation gradient; at adaptation time nothing but the
episodes is used.

Gotchas
- The encoder only sees what the support episodes show. A family whose hidden parameter is only
  revealed by a rare event (greet_visitor's preferred gesture, by an attempted greeting)
  depends on the meta-policy trying it; the max pool keeps a rare strong feature from being
  averaged away.
- Inference is amortised: tasks far outside the training distribution get a context the
  encoder never learned to produce, where a gradient step would still move the right way.
- Advantages are normalised per batch (as in the PG step), returns are squashed with symlog:
  returns differ by two orders of magnitude across families.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar_meta.meta.core import LossFn, Params, TaskBatch, map_tasks
from avatar_meta.rl.losses import GuidedBatch, RLBatch, normalize_advantages
from avatar_meta.rl.policy import Buffers, Policy, PolicySpec

SEEN_KEYS = ("encoder.seen.sum", "encoder.seen.max", "encoder.seen.adv_sum", "encoder.seen.count")
"""The pooled statistics adapted params carry between adaptation steps."""


@dataclass(frozen=True)
class EncoderConfig:
    """Hyperparameters of the task encoder."""

    hidden: int = 64
    """Width of the two hidden layers of g_phi (and of each pooled statistic)."""
    code_size: int = 0
    """Width of the task code the inferred context is decoded into for the supervised task
    loss (`tasks.TASK_CODE_SIZE`); 0 = no decoder."""
    task_weight: float = 1.0
    """Weight of the supervised task loss next to the outer loss (needs query batches that
    carry task codes: `GuidedBatch`)."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (False = per-task Python loop, same numbers)."""


def feature_size(spec: PolicySpec) -> int:
    """Width of one transition's feature row f_j."""
    return 2 * spec.obs_size + spec.num_continuous + spec.num_discrete + 3


def encoder_shapes(spec: PolicySpec, hidden: int, code_size: int = 0) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the encoder's weights (the context size is the policy's)."""
    if not spec.context_size:
        raise ValueError("the encoder writes the policy's task context: set policy.context_size")
    decoder = {}
    if code_size:
        decoder = {
            "encoder.decode.weight": (code_size, spec.context_size),
            "encoder.decode.bias": (code_size,),
        }
    return {
        "encoder.0.weight": (hidden, feature_size(spec)),
        "encoder.0.bias": (hidden,),
        "encoder.1.weight": (hidden, hidden),
        "encoder.1.bias": (hidden,),
        "encoder.out.weight": (spec.context_size, 3 * hidden),
        "encoder.out.bias": (spec.context_size,),
        **decoder,
    }


def init_encoder(spec: PolicySpec, hidden: int = 64, seed: int = 0, code_size: int = 0) -> Params:
    """Orthogonal hidden layers (gain 5/3, tanh) and decoder, zero biases and a zero output
    layer, so the untrained encoder leaves the context at its prior."""
    gen = torch.Generator().manual_seed(seed + 17)
    out: Params = {}
    for name, shape in encoder_shapes(spec, hidden, code_size).items():
        t = torch.zeros(shape)
        if name in ("encoder.0.weight", "encoder.1.weight", "encoder.decode.weight"):
            torch.nn.init.orthogonal_(t, gain=5.0 / 3.0, generator=gen)
        out[name] = t
    return out


def symlog(x: Tensor) -> Tensor:
    """sign(x) log(1 + |x|): keeps small values, compresses large ones."""
    return torch.sign(x) * torch.log1p(x.abs())


def transition_features(policy: Policy, buffers: Buffers, batch: RLBatch, adv: Tensor) -> Tensor:
    """f_j for every row of one task's batch, [N, feature_size]; `adv` [N, 1] is the batch's
    normalised advantage (the pooling weights rows by it too)."""
    spec = policy.spec
    obs = policy.normalize(buffers, batch.obs)
    change = policy.normalize(buffers, batch.next_obs) - obs
    action = batch.cont_action.clamp(-3.0, 3.0)
    gestures = [
        F.one_hot(batch.gesture[..., b], n).to(obs.dtype)
        for b, n in enumerate(spec.discrete_branches)
    ]
    reward = symlog(batch.reward).unsqueeze(-1)
    ret = symlog(batch.returns).unsqueeze(-1)
    return torch.cat([obs, action, *gestures, reward, change, adv, ret], dim=-1)


def pool(params: Params, policy: Policy, buffers: Buffers, batch: RLBatch) -> Params:
    """The batch's pooled statistics (`SEEN_KEYS`): weighted sums of h and of A*h, the max of
    h over real rows and the total weight. Padding rows (weight 0) contribute nothing."""
    adv = normalize_advantages(batch.advantages, batch.weight).unsqueeze(-1)
    f = transition_features(policy, buffers, batch, adv)
    h = torch.tanh(F.linear(f, params["encoder.0.weight"], params["encoder.0.bias"]))
    h = torch.tanh(F.linear(h, params["encoder.1.weight"], params["encoder.1.bias"]))
    w = batch.weight.unsqueeze(-1)
    return {
        "encoder.seen.sum": (h * w).sum(0),
        "encoder.seen.max": torch.where(w > 0, h, torch.full_like(h, -1.0)).amax(0),
        "encoder.seen.adv_sum": (h * adv * w).sum(0),
        "encoder.seen.count": batch.weight.sum(),
    }


def merge_pools(seen: Params, new: Params) -> Params:
    """Pools over the union of two sets of transitions."""
    return {
        "encoder.seen.sum": seen["encoder.seen.sum"] + new["encoder.seen.sum"],
        "encoder.seen.max": torch.maximum(seen["encoder.seen.max"], new["encoder.seen.max"]),
        "encoder.seen.adv_sum": seen["encoder.seen.adv_sum"] + new["encoder.seen.adv_sum"],
        "encoder.seen.count": seen["encoder.seen.count"] + new["encoder.seen.count"],
    }


def context_from_pools(params: Params, seen: Params, prior: Tensor) -> Tensor:
    """c = prior + W_out [mean h, max h, mean A h] + b_out."""
    count = seen["encoder.seen.count"].clamp_min(1.0)
    s = torch.cat(
        [
            seen["encoder.seen.sum"] / count,
            seen["encoder.seen.max"],
            seen["encoder.seen.adv_sum"] / count,
        ]
    )
    return prior + F.linear(s, params["encoder.out.weight"], params["encoder.out.bias"])


def encoder_adapt(params: Params, support: RLBatch, *, policy: Policy, buffers: Buffers) -> Params:
    """One adaptation step for one task: pool `support` into what the params have already
    seen and infer the context from all of it. Differentiable w.r.t. params.

    The meta-params hold neither pools nor a separate prior: the first step starts from
    empty pools and takes the meta-policy's `actor.context` as the prior, and records it as
    `encoder.prior` so later steps do not add to an already adapted context."""
    new = pool(params, policy, buffers, support)
    if SEEN_KEYS[0] in params:
        seen = merge_pools({k: params[k] for k in SEEN_KEYS}, new)
        prior = params["encoder.prior"]
    else:
        seen, prior = new, params["actor.context"]
    adapted = dict(params)
    adapted.update(seen)
    adapted["encoder.prior"] = prior
    adapted["actor.context"] = context_from_pools(params, seen, prior)
    return adapted


def task_code_loss(adapted: Params, query: GuidedBatch) -> Tensor:
    """Squared error between the task code decoded from the inferred context and the task's
    true code (carried on every query row; padding rows excluded)."""
    w = query.rl.weight.unsqueeze(-1)
    code = (query.task_code * w).sum(0) / w.sum().clamp_min(1.0)
    decoded = F.linear(
        adapted["actor.context"], adapted["encoder.decode.weight"], adapted["encoder.decode.bias"]
    )
    return (decoded - code).square().mean()


def encoder_task_loss(
    params: Params,
    support: RLBatch,
    query: Any,
    *,
    adapt_fn: Any,
    outer_loss: LossFn,
    task_weight: float,
) -> Tensor:
    """Query loss of one task after inferring its context from its support batch, plus the
    supervised task loss when the query carries task codes and the encoder has a decoder."""
    adapted = adapt_fn(params, support)
    loss = outer_loss(adapted, query)
    supervised = (
        isinstance(query, GuidedBatch)
        and query.task_code.shape[-1] > 0
        and "encoder.decode.weight" in params
    )
    if supervised and task_weight > 0:
        loss = loss + task_weight * task_code_loss(adapted, query)
    return loss


@dataclass(frozen=True)
class TaskEncoder:
    """The task-inference learner bound to a policy, its normalisation buffers and the outer
    loss; the same `adapt` / `adapt_tasks` / `meta_loss` / `meta_grad` surface as `MAML`.
    Stateless: parameters (policy + `encoder.*`) are always passed in."""

    policy: Policy
    """The policy whose `actor.context` the encoder writes."""
    buffers: Buffers
    """Observation normalisation the features use (rebuild the learner when they change)."""
    outer_loss: LossFn
    """Query-set loss `(params, batch) -> scalar` of the adapted policy."""
    config: EncoderConfig = field(default_factory=EncoderConfig)
    """Hyperparameters."""

    def adapt(self, params: Params, support: RLBatch, steps: int | None = None) -> Params:
        """Adapted parameters for one task (`steps` is accepted for interface parity: one
        forward pass uses the whole batch, so more steps on the same batch change nothing
        worth paying for)."""
        return encoder_adapt(params, support, policy=self.policy, buffers=self.buffers)

    def adapt_tasks(self, params: Params, supports: RLBatch, steps: int | None = None) -> Params:
        """Adapted parameters [K, ...] for every task of a task-stacked support batch, without
        gradients (for collecting query rollouts)."""
        with torch.no_grad():
            out: Params = map_tasks(self.adapt, (None, 0), self.config.use_vmap)(params, supports)
        return out

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """Mean over tasks of the adapted policy's query loss."""
        per_task = partial(
            encoder_task_loss,
            adapt_fn=self.adapt,
            outer_loss=self.outer_loss,
            task_weight=self.config.task_weight,
        )
        losses: Tensor = map_tasks(per_task, (None, 0, 0), self.config.use_vmap)(
            params, tasks.support, tasks.query
        )
        return losses.mean()

    def meta_grad(self, params: Params, tasks: TaskBatch) -> tuple[Params, Tensor]:
        """(meta-gradient dict, meta-loss) via `torch.func.grad_and_value`."""
        grads, loss = torch.func.grad_and_value(self.meta_loss)(params, tasks)
        return grads, loss
