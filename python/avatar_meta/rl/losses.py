"""Policy-gradient losses as pure functions of `(params, batch)`.

`RLBatch` is a NamedTuple of tensors (so `torch.func.vmap` maps over it as a pytree): one
task's transitions, N rows, or a stack of tasks with a leading task dimension [K, N, ...].
All means are weighted by `weight` so tasks can be padded to a common N for `vmap`
(`stack_batches` does that). Advantages are normalised per batch (per task under `vmap`).

Losses take the policy and its normalisation buffers as keywords; bind them with
`functools.partial` (or `make_pg_loss` / `make_ppo_loss`) to get the `(params, batch)`
function the meta-learners expect.

References: Williams 1992 (REINFORCE); Schulman et al. 2017 (PPO-clip).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from avatar_meta.rl.policy import Buffers, Params, Policy


class RLBatch(NamedTuple):
    """Transitions of one task (shapes per task; stacked batches add a leading [K])."""

    obs: Tensor  # [N, obs_size] float
    mask: Tensor  # [N, num_discrete] bool, True = masked (protocol convention)
    cont_action: Tensor  # [N, num_continuous] float, raw Gaussian sample taken
    gesture: Tensor  # [N, num_branches] int64, discrete choice per branch
    advantages: Tensor  # [N] float, GAE advantages (normalised inside the losses)
    returns: Tensor  # [N] float, value targets (GAE lambda-returns)
    old_log_prob: Tensor  # [N] float, log-prob under the policy that collected the data
    values: Tensor  # [N] float, value estimates at collection time
    weight: Tensor  # [N] float, 1 = real transition, 0 = padding
    reward: Tensor  # [N] float, the transition's reward (what task inference reads)
    next_obs: Tensor  # [N, obs_size] float, the observation after the action


def make_batch(
    obs: Tensor,
    mask: Tensor,
    cont_action: Tensor,
    gesture: Tensor,
    advantages: Tensor,
    returns: Tensor,
    old_log_prob: Tensor,
    values: Tensor,
    weight: Tensor | None = None,
    reward: Tensor | None = None,
    next_obs: Tensor | None = None,
) -> RLBatch:
    """Build an `RLBatch`, making `gesture` 2-D. Defaults: `weight` ones, `reward` zeros,
    `next_obs` = `obs` (for losses that never read them)."""
    if gesture.dim() == obs.dim() - 1:
        gesture = gesture.unsqueeze(-1)
    if weight is None:
        weight = torch.ones_like(advantages)
    return RLBatch(
        obs,
        mask.bool(),
        cont_action,
        gesture.long(),
        advantages,
        returns,
        old_log_prob,
        values,
        weight,
        torch.zeros_like(advantages) if reward is None else reward,
        obs if next_obs is None else next_obs,
    )


def pad_batch(batch: RLBatch, size: int) -> RLBatch:
    """Pad the N rows of one task to `size` with zero-weight rows (mask False, gesture 0)."""
    n = batch.obs.shape[0]
    if n > size:
        raise ValueError(f"cannot pad a batch of {n} rows to {size}")
    return RLBatch(*(_pad_rows(x, size) for x in batch))


def _pad_rows(x: Tensor, size: int) -> Tensor:
    """x with zero rows appended up to `size` rows."""
    return torch.cat([x, x.new_zeros((size - x.shape[0], *x.shape[1:]))])


def stack_batches(batches: Sequence[RLBatch]) -> RLBatch:
    """Stack per-task batches into [K, N_max, ...], padding shorter ones (weight 0)."""
    size = max(b.obs.shape[0] for b in batches)
    padded = [pad_batch(b, size) for b in batches]
    return RLBatch(*(torch.stack(xs) for xs in zip(*padded, strict=True)))


def weighted_mean(x: Tensor, weight: Tensor) -> Tensor:
    """sum(w * x) / sum(w) over the last dimension."""
    return (x * weight).sum(-1) / weight.sum(-1).clamp_min(1e-8)


def normalize_advantages(adv: Tensor, weight: Tensor, eps: float = 1e-8) -> Tensor:
    """(adv - mean) / (std + eps) with weighted statistics (padding excluded)."""
    mean = weighted_mean(adv, weight)
    std = weighted_mean((adv - mean.unsqueeze(-1)).square(), weight).sqrt()
    return (adv - mean.unsqueeze(-1)) / (std.unsqueeze(-1) + eps)


def pg_loss(
    params: Params, batch: RLBatch, *, policy: Policy, buffers: Buffers, normalize: bool = True
) -> Tensor:
    """Vanilla policy gradient (REINFORCE with GAE advantages): -mean(log_pi * A).

    This is MAML's differentiable inner step. Advantages are constants (data); with
    `normalize` they are normalised per batch, which is what makes an inner step size of
    about 0.5 work across tasks with different reward scales.
    """
    lp = policy.log_prob(params, buffers, batch.obs, batch.mask, batch.cont_action, batch.gesture)
    adv = batch.advantages
    if normalize:
        adv = normalize_advantages(adv, batch.weight)
    return -weighted_mean(lp * adv, batch.weight)


@dataclass(frozen=True)
class PPOConfig:
    """Coefficients of the PPO-clip objective."""

    clip: float = 0.2
    """Probability-ratio clip range epsilon."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus (keep > 0 or a log-std floor: PPO collapses otherwise)."""
    normalize_advantages: bool = True
    """Normalise advantages per batch (per task under vmap)."""
    clip_value_loss: bool = False
    """Clip the value prediction to within `clip` of the collection-time value (CleanRL)."""


class PPOTerms(NamedTuple):
    """The total PPO loss and its parts (all scalars); the diagnostics carry no gradient."""

    loss: Tensor
    policy_loss: Tensor
    value_loss: Tensor
    entropy: Tensor
    approx_kl: Tensor
    clip_frac: Tensor


def ppo_terms(
    params: Params, batch: RLBatch, *, policy: Policy, buffers: Buffers, cfg: PPOConfig
) -> PPOTerms:
    """PPO-clip: -min(r A, clip(r, 1-eps, 1+eps) A) + vf * (V - R)^2 / 2 - ent * H."""
    out = policy.forward(params, buffers, batch.obs, batch.mask)
    lp = policy.dist_log_prob(out, batch.cont_action, batch.gesture)
    w = batch.weight
    log_ratio = lp - batch.old_log_prob
    ratio = log_ratio.exp()
    adv = (
        normalize_advantages(batch.advantages, w) if cfg.normalize_advantages else batch.advantages
    )
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip) * adv)
    policy_loss = -weighted_mean(surrogate, w)
    v_err = (out.value - batch.returns).square()
    if cfg.clip_value_loss:
        v_clip = batch.values + (out.value - batch.values).clamp(-cfg.clip, cfg.clip)
        v_err = torch.maximum(v_err, (v_clip - batch.returns).square())
    value_loss = 0.5 * weighted_mean(v_err, w)
    entropy = weighted_mean(policy.dist_entropy(out), w)
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
    with torch.no_grad():
        approx_kl = weighted_mean((ratio - 1.0) - log_ratio, w)  # Schulman's k3 estimator
        clip_frac = weighted_mean(((ratio - 1.0).abs() > cfg.clip).to(lp.dtype), w)
    return PPOTerms(loss, policy_loss, value_loss, entropy, approx_kl, clip_frac)


def ppo_loss(
    params: Params, batch: RLBatch, *, policy: Policy, buffers: Buffers, cfg: PPOConfig
) -> Tensor:
    """Scalar PPO-clip loss (see `ppo_terms`)."""
    return ppo_terms(params, batch, policy=policy, buffers=buffers, cfg=cfg).loss


LossFn = Callable[[Params, RLBatch], Tensor]


def make_pg_loss(policy: Policy, buffers: Buffers, normalize: bool = True) -> LossFn:
    """`pg_loss` bound to a policy and its buffers: a `(params, batch) -> loss` function."""
    return partial(pg_loss, policy=policy, buffers=buffers, normalize=normalize)


def make_ppo_loss(policy: Policy, buffers: Buffers, cfg: PPOConfig | None = None) -> LossFn:
    """`ppo_loss` bound to a policy, its buffers and coefficients."""
    return partial(ppo_loss, policy=policy, buffers=buffers, cfg=cfg or PPOConfig())


# ---------------------------------------------------------------------------------------------
# imitation (guided meta-policy search)
# ---------------------------------------------------------------------------------------------
class GuidedBatch(NamedTuple):
    """An RLBatch plus the expert's action at every row (shapes per task, like RLBatch), and
    the row's task code (`tasks.task_code`: the hidden parameters, which supervise the task
    encoder's inference; width 0 where nothing needs it)."""

    rl: RLBatch
    expert_cont: Tensor  # [N, num_continuous] float, the expert's command (in -1..1)
    expert_gesture: Tensor  # [N, num_branches] int64, the expert's discrete choice
    task_code: Tensor  # [N, code] float, the task's code on every row


def stack_guided(batches: Sequence[GuidedBatch]) -> GuidedBatch:
    """Stack per-task guided batches into [K, N_max, ...], padding like `stack_batches`."""
    size = max(b.rl.obs.shape[0] for b in batches)
    return GuidedBatch(
        stack_batches([b.rl for b in batches]),
        torch.stack([_pad_rows(b.expert_cont, size) for b in batches]),
        torch.stack([_pad_rows(b.expert_gesture, size) for b in batches]),
        torch.stack([_pad_rows(b.task_code, size) for b in batches]),
    )


COMMAND_LIMIT_EDGE = 0.98
"""An expert command at least this close to the world's clip (+-1) asks for "this far or
further" (`command_error`)."""


def command_error(mean: Tensor, expert: Tensor) -> Tensor:
    """`mean - expert`, except that going past an expert command at the clip is no error.

    The world clips every continuous command to [-1, 1], so an expert at full speed or full
    turn says "at least this much", not "exactly this". A plain squared error centres the
    imitation on the bound, and about half of its commands then fall short of it: the
    imitation drove patrol's legs about 5% slower than its teacher. Censoring the error on
    the far side of a saturated label lets the mean settle beyond the bound instead."""
    past_top = (expert >= COMMAND_LIMIT_EDGE) & (mean > expert)
    past_bottom = (expert <= -COMMAND_LIMIT_EDGE) & (mean < expert)
    return torch.where(past_top | past_bottom, torch.zeros_like(mean), mean - expert)


def imitation_loss(
    params: Params,
    batch: GuidedBatch,
    *,
    policy: Policy,
    buffers: Buffers,
    gesture_weight: float = 0.3,
    vf_coef: float = 0.5,
) -> Tensor:
    """Behaviour cloning of the expert on the visited states, plus the critic's value loss.

    Squared error of the Gaussian *mean* (not its log-likelihood: maximising the likelihood of
    a deterministic expert shrinks the log-std, and the inner policy-gradient step needs that
    exploration noise; going past a saturated command is no error, see `command_error`),
    cross-entropy of the expert's gesture where the mask allows it, and 0.5 * (V - R)^2 so
    the critic keeps providing the inner step's GAE baselines (`vf_coef` 0: the critic is not
    even run).
    Reference: Mendonca et al. 2019, "Guided Meta-Policy Search".
    """
    b = batch.rl
    forward = policy.forward if vf_coef else policy.actor_forward
    out = forward(params, buffers, b.obs, b.mask)
    w = b.weight
    error = command_error(out.mean, batch.expert_cont)
    mse = weighted_mean(error.square().sum(-1), w)
    ce = torch.zeros_like(mse)
    start = 0
    for branch, size in enumerate(policy.spec.discrete_branches):
        logits = out.logits[..., start : start + size]
        mask = b.mask[..., start : start + size]
        label = batch.expert_gesture[..., branch : branch + 1].long()
        logp = torch.log_softmax(logits, -1).gather(-1, label).squeeze(-1)
        allowed = (~mask.gather(-1, label).squeeze(-1)).to(logp.dtype) * w
        ce = ce - weighted_mean(logp, allowed)
        start += size
    if not vf_coef:
        return mse + gesture_weight * ce
    value_loss = 0.5 * weighted_mean((out.value - b.returns).square(), w)
    return mse + gesture_weight * ce + vf_coef * value_loss


def guided_loss(
    params: Params,
    batch: GuidedBatch,
    *,
    policy: Policy,
    buffers: Buffers,
    ppo: PPOConfig | None,
    imitation_weight: float = 1.0,
    gesture_weight: float = 0.3,
    vf_coef: float = 0.5,
) -> Tensor:
    """`imitation_loss` alone (`ppo` None), or PPO-clip on the same rows plus
    `imitation_weight` x the imitation terms (demonstration-augmented policy gradient,
    Rajeswaran et al. 2018: the reward keeps shaping what the expert's labels cannot decide,
    e.g. whether to risk a greeting at all). The value loss is counted once (PPO's `vf_coef`
    when `ppo` is given, else `vf_coef`)."""
    bc_term = imitation_loss(
        params,
        batch,
        policy=policy,
        buffers=buffers,
        gesture_weight=gesture_weight,
        vf_coef=vf_coef if ppo is None else 0.0,
    )
    if ppo is None:
        return bc_term
    return ppo_loss(params, batch.rl, policy=policy, buffers=buffers, cfg=ppo) + (
        imitation_weight * bc_term
    )


def make_guided_loss(
    policy: Policy,
    buffers: Buffers,
    ppo: PPOConfig | None,
    imitation_weight: float = 1.0,
    gesture_weight: float = 0.3,
    vf_coef: float = 0.5,
) -> Callable[[Params, GuidedBatch], Tensor]:
    """`guided_loss` bound to a policy, its buffers and weights."""
    return partial(
        guided_loss,
        policy=policy,
        buffers=buffers,
        ppo=ppo,
        imitation_weight=imitation_weight,
        gesture_weight=gesture_weight,
        vf_coef=vf_coef,
    )
