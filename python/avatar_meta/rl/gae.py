"""GAE(lambda) and discounted returns as pure tensor functions over time-last tensors.

Shapes: every per-step tensor is [..., T] (e.g. [T] or [B, T] with B parallel agents, time
last); `last_value` is [...] (the value of the observation after the last step).

Episode ends (ML-Agents semantics):
- `dones[t]`: the episode ended with step t (the next observation in the stream belongs to a
  new episode, so the recursion is cut there);
- `interrupted[t]`: it ended because of a time limit (`max_step_reached`), not a true
  terminal state. The return is then bootstrapped with `terminal_values[t]`, the value of the
  episode's last observation (the world reports it as `terminal_obs`). Treating a timeout as
  terminal biases values towards 0 near the limit. `interrupted` implies `dones`.

`gae` builds its output without in-place writes, so autograd and `torch.func` can
differentiate it with respect to gamma and lambda passed as 0-d tensors (meta-gradient RL,
`meta.metagrad`, learns them).

Reference: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation".
"""

from __future__ import annotations

import torch
from torch import Tensor


def bootstrap_values(
    values: Tensor,
    dones: Tensor,
    last_value: Tensor,
    interrupted: Tensor | None = None,
    terminal_values: Tensor | None = None,
) -> Tensor:
    """V(s_{t+1}) to use for each step [..., T]: the next value inside an episode, the
    terminal observation's value after an interruption, and 0 after a true termination."""
    dones = dones.bool()
    nxt = torch.cat([values[..., 1:], last_value.unsqueeze(-1).to(values.dtype)], dim=-1)
    nxt = torch.where(dones, torch.zeros_like(nxt), nxt)
    if interrupted is not None:
        interrupted = interrupted.bool()
        if terminal_values is None:
            if bool(interrupted.any()):
                raise ValueError("interrupted steps need terminal_values to bootstrap from")
        else:
            nxt = torch.where(interrupted, terminal_values.to(values.dtype), nxt)
    return nxt


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_value: Tensor,
    interrupted: Tensor | None = None,
    terminal_values: Tensor | None = None,
    gamma: float | Tensor = 0.99,
    lam: float | Tensor = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and lambda-returns, both [..., T] (differentiable in
    gamma and lam when they are tensors).

    delta_t = r_t + gamma * V_next_t - V(s_t)            (V_next from `bootstrap_values`)
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}
    returns = A + values (the critic's regression target)
    """
    done = dones.bool()
    if interrupted is not None:
        done = done | interrupted.bool()
    nxt = bootstrap_values(values, done, last_value, interrupted, terminal_values)
    deltas = rewards + gamma * nxt - values
    carry = (1.0 - done.to(values.dtype)) * (gamma * lam)
    acc = torch.zeros_like(values[..., 0])
    backwards: list[Tensor] = []
    for t in range(values.shape[-1] - 1, -1, -1):
        acc = deltas[..., t] + carry[..., t] * acc
        backwards.append(acc)
    adv = torch.stack(backwards[::-1], dim=-1)
    return adv, adv + values


def discounted_returns(
    rewards: Tensor,
    dones: Tensor,
    last_value: Tensor,
    interrupted: Tensor | None = None,
    terminal_values: Tensor | None = None,
    gamma: float = 0.99,
) -> Tensor:
    """Bootstrapped discounted returns [..., T]:
    G_t = r_t + gamma * (G_{t+1} inside an episode | V(terminal obs) if interrupted | 0)."""
    done = dones.bool()
    if interrupted is not None:
        done = done | interrupted.bool()
    zeros = torch.zeros_like(rewards)
    boot = bootstrap_values(zeros, done, torch.zeros_like(last_value), interrupted, terminal_values)
    out = torch.zeros_like(rewards)
    acc = last_value.to(rewards.dtype)
    for t in range(rewards.shape[-1] - 1, -1, -1):
        acc = rewards[..., t] + gamma * torch.where(done[..., t], boot[..., t], acc)
        out[..., t] = acc
    return out
