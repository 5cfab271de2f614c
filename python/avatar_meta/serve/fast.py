"""Cheaper, numerically pinned pieces of serve-time adaptation.

The run's test-time step for MAML/FOMAML/Meta-SGD is one first-order step of
`rl.losses.pg_loss` on the actor (`training.evaluate.make_adapt_fn`). Two things in that path
cost CPU without changing the result, and are replaced here (training code is untouched):

- `pg_loss` calls `Policy.forward`, which also runs the critic MLP although the loss never
  reads the value: `actor_pg_loss` is the same loss with `Policy.actor_forward`, the actor
  half of `Policy.forward` (same operations in the same order, so the loss and its gradient
  are bit-identical; `tests/test_serve_batching.py` checks both against `pg_loss`);
- `rl.gae` loops over time with three torch ops per step (~6 ms for 200 steps, mostly
  dispatch overhead): `gae_padded` runs the same recursion, operation for operation, on
  float32 numpy arrays (bit-identical to `rl.gae`, also tested).

Everything else (validation, GAE inputs, step sizes) is shared with the trainer's code.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from avatar_meta.rl import Buffers, Params, Policy, RLBatch
from avatar_meta.rl.losses import normalize_advantages, weighted_mean


def actor_pg_loss(params: Params, batch: RLBatch, *, policy: Policy, buffers: Buffers) -> Tensor:
    """`rl.losses.pg_loss(normalize=True)` computed without the critic."""
    out = policy.actor_forward(params, buffers, batch.obs, batch.mask)
    lp = policy.dist_log_prob(out, batch.cont_action, batch.gesture)
    adv = normalize_advantages(batch.advantages, batch.weight)
    return -weighted_mean(lp * adv, batch.weight)


def gae_padded(
    rewards: np.ndarray,
    values: np.ndarray,
    lengths: np.ndarray,
    interrupted: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and lambda-returns [E, T] of E episodes padded to T steps, as
    `rl.gae(rewards, values, dones, zeros(E), interrupted=..., terminal_values=values,
    gamma, lam)` computes them for the service's episodes (episode i has `lengths[i]` steps
    and ends at its last one; padding counts as ended; `interrupted[i]`: that last step was
    a time limit, bootstrapped with the critic's value of the last observation).

    Float32 throughout, the same operations in the same order as `rl.gae`, so the result is
    bit-identical; only the per-step dispatch cost of torch is gone.
    """
    e, t = values.shape
    steps = np.arange(t)
    done = steps[None, :] >= (lengths[:, None] - 1)  # last step of each episode and padding
    inter = np.zeros((e, t), bool)
    inter[np.arange(e), lengths - 1] = interrupted
    done = done | inter
    nxt = np.concatenate([values[:, 1:], np.zeros((e, 1), np.float32)], axis=1)
    nxt = np.where(done, np.float32(0), nxt)
    nxt = np.where(inter, values, nxt)
    # rl.gae: rewards + gamma * nxt - values, carry = (1 - done) * (gamma * lam), in float32
    deltas = rewards + np.float32(gamma) * nxt - values
    carry = (np.float32(1.0) - done.astype(np.float32)) * np.float32(gamma * lam)
    adv = np.zeros_like(values)
    acc = np.zeros(e, np.float32)
    d_t, c_t = np.ascontiguousarray(deltas.T), np.ascontiguousarray(carry.T)
    for i in range(t - 1, -1, -1):
        acc = d_t[i] + c_t[i] * acc
        adv[:, i] = acc
    return adv, adv + values
