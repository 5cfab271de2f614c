"""Model-based meta-learner: a task encoder and a hypernetwork, theta_i = f_phi(T_i).

The "black-box" or model-based family of meta-learners: adaptation is a forward pass of a
network over the task's data, not gradient steps. Here, following Ha, Dai & Le 2017
("HyperNetworks", ICLR) for the weight generator and Garnelo et al. 2018 ("Conditional Neural
Processes", ICML) / Rakelly et al. 2019 ("PEARL", ICML) for the permutation-invariant
context encoder:

    e_j   = g_phi(s_j, a_j, r_j, s'_j)                  each context transition, an MLP
    z_i   = mean_j e_j                                   task embedding (order does not matter)
    W_i   = W_0 + reshape(H_phi(z_i))[:, :-1]            the policy head's weights ...
    b_i   = b_0 + reshape(H_phi(z_i))[:, -1]             ... and bias, emitted by the hypernet
    pi_i(s) = W_i h_phi(s) + b_i                         trunk h_phi is shared by all tasks

The adapted policy `hypernet_adapt(params, context)` is a *plain MLP* params dict
(`policy.0.weight`, ..., the last layer being the emitted head), so it runs, exports and
streams (PolicyWeights) exactly like a gradient-adapted policy. Meta-training minimises the
query loss of the emitted policy over a batch of tasks (`hypernet_meta_loss`), end to end
through the encoder, the hypernet and the trunk.

Context layout: one row per transition, `[obs (O), action (A), reward (1), next obs (O)]`,
`context [K, 2O + A + 1]`, optionally with per-row weights `[K]` (0 = padding) so tasks with
fewer transitions can be stacked. `split_context` returns the (obs, action) pairs, which is
what a gradient-based learner (MAML with a behaviour-cloning loss) adapts on: both learners can
be given exactly the same adaptation data.

Gotchas
- Initialise the emitted weights small (`head_init_scale`): a hypernet whose last layer has
  the default scale emits heads whose variance is set by the embedding, not by the target
  layer's fan-in, and early training is unstable (Chang, Flokas & Lipson 2020, "Principled
  Weight Initialization for Hypernetworks"). With `W_0, b_0` (a shared base head) and a
  small residual, training starts as multi-task behaviour cloning and learns to deviate.
- Mean pooling makes the embedding's scale independent of K, so a model trained with K = 16
  transitions still works with 4 or 64 (not as well far outside the training range); a sum
  would not. It also makes the embedding blind to how many transitions it saw: there is no
  posterior uncertainty here (PEARL's product-of-Gaussians posterior adds it).
- The learner is only as good as the context's coverage: transitions that do not show the
  hidden parameter (e.g. a few steps where the avatar stands still) give an uninformative
  embedding and the policy falls back to roughly the multi-task average.
- Out-of-distribution tasks (a hidden parameter outside the training range) are where
  gradient-based adaptation keeps improving with more data and an amortised encoder does not:
  pick MAML when the new tasks may lie far outside what was meta-trained.
- Generating only the head keeps the hypernet small (H x A + A outputs); the trunk's features
  must then be rich enough for every task's linear read-out.

The end of the module records scripted-expert demonstrations in the built-in plaza and samples
meta-batches from them (what `avatar-meta fit hypernet` and the benchmark,
`benchmarks/hypernet_bench.py`, train on). It imports the world lazily, so the learner itself
stays environment-agnostic (design section 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from avatar_meta import contract
from avatar_meta.meta.core import (
    Params,
    TaskBatch,
    assign_grads,
    leaf_params,
    map_tasks,
)

OBS_DIM = contract.OBSERVATION_SIZE
"""The avatar's observation size, the default input."""
ACT_DIM = contract.NUM_CONTINUOUS_ACTIONS
"""The avatar's continuous actions (forward, turn)."""


# =============================================================================== config
@dataclass(frozen=True)
class HypernetConfig:
    """Sizes and initialisation of the task encoder, the hypernetwork and the policy."""

    obs_dim: int = OBS_DIM
    """Observation size O of the policy (and of each context transition's s and s')."""
    act_dim: int = ACT_DIM
    """Action size A the policy outputs (continuous)."""
    trunk: tuple[int, ...] = (64, 64)
    """Hidden widths of the shared policy trunk h_phi (tanh)."""
    encoder: tuple[int, ...] = (64, 64)
    """Hidden widths of the per-transition encoder g_phi (tanh)."""
    embed_dim: int = 16
    """Size of the task embedding z."""
    hyper_hidden: int = 64
    """Hidden width of the hypernetwork H_phi (one tanh layer)."""
    head_init_scale: float = 0.1
    """Emitted head weights start at this fraction of a 1/sqrt(fan-in) layer's scale."""
    use_reward: bool = True
    """Feed rewards and next observations to the encoder (False: (s, a) pairs only)."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (False = per-task Python loop, same numbers)."""

    @property
    def transition_dim(self) -> int:
        """Width of one context row: obs, action, reward, next obs."""
        return 2 * self.obs_dim + self.act_dim + 1


class Context(NamedTuple):
    """One task's context transitions `rows [K, 2O + A + 1]` and their weights `[K]`."""

    rows: Tensor
    weights: Tensor


def make_context(
    obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, weights: Tensor | None = None
) -> Context:
    """Context rows from transition arrays `[..., K, O]`, `[..., K, A]`, `[..., K]`,
    `[..., K, O]` (any leading dimensions, e.g. tasks)."""
    rows = torch.cat([obs, action, reward.unsqueeze(-1), next_obs], dim=-1)
    w = torch.ones(rows.shape[:-1], dtype=rows.dtype) if weights is None else weights
    return Context(rows, w)


def split_context(context: Context, cfg: HypernetConfig) -> tuple[Tensor, Tensor, Tensor]:
    """The context as a behaviour-cloning batch `(obs [K, O], action [K, A], weights [K])`."""
    o, a = cfg.obs_dim, cfg.act_dim
    return context.rows[..., :o], context.rows[..., o : o + a], context.weights


# =============================================================================== params
def _linear(
    gen: torch.Generator, n_in: int, n_out: int, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    bound = scale / math.sqrt(n_in)
    w = (torch.rand(n_out, n_in, generator=gen) * 2 - 1) * bound
    return w, torch.zeros(n_out)


def init_hypernet(cfg: HypernetConfig, seed: int = 0) -> Params:
    """Meta-parameters: `enc.*` (transition encoder), `hyper.*` (hypernetwork), `trunk.*`
    (policy trunk), `head.weight`/`head.bias` (the shared base head W_0, b_0)."""
    gen = torch.Generator().manual_seed(seed)
    p: Params = {}
    enc_sizes = (cfg.transition_dim, *cfg.encoder, cfg.embed_dim)
    for i, (a, b) in enumerate(zip(enc_sizes[:-1], enc_sizes[1:], strict=True)):
        p[f"enc.{i}.weight"], p[f"enc.{i}.bias"] = _linear(gen, a, b)
    trunk_sizes = (cfg.obs_dim, *cfg.trunk)
    for i, (a, b) in enumerate(zip(trunk_sizes[:-1], trunk_sizes[1:], strict=True)):
        p[f"trunk.{i}.weight"], p[f"trunk.{i}.bias"] = _linear(gen, a, b)
    h = trunk_sizes[-1]
    p["head.weight"], p["head.bias"] = _linear(gen, h, cfg.act_dim)
    p["hyper.0.weight"], p["hyper.0.bias"] = _linear(gen, cfg.embed_dim, cfg.hyper_hidden)
    # The emitted head: W_i - W_0 has fan-in h; scale its generator so it starts small.
    p["hyper.1.weight"], p["hyper.1.bias"] = _linear(
        gen, cfg.hyper_hidden, cfg.act_dim * (h + 1), cfg.head_init_scale / math.sqrt(h)
    )
    return p


def _mlp(params: Params, prefix: str, x: Tensor, last_linear: bool) -> Tensor:
    n = sum(1 for k in params if k.startswith(prefix) and k.endswith(".weight"))
    for i in range(n):
        x = torch.nn.functional.linear(
            x, params[f"{prefix}{i}.weight"], params[f"{prefix}{i}.bias"]
        )
        if i < n - 1 or not last_linear:
            x = torch.tanh(x)
    return x


# =============================================================================== pure core
def encode_context(params: Params, context: Context, cfg: HypernetConfig) -> Tensor:
    """Task embedding z [E]: weighted mean of the per-transition encodings (permutation
    invariant; rows of weight 0 are ignored)."""
    rows = context.rows
    if not cfg.use_reward:
        o, a = cfg.obs_dim, cfg.act_dim
        rows = torch.cat([rows[..., : o + a], torch.zeros_like(rows[..., o + a :])], dim=-1)
    e = _mlp(params, "enc.", rows, last_linear=True)  # [K, E]
    w = context.weights.unsqueeze(-1)
    return (e * w).sum(-2) / w.sum(-2).clamp_min(1e-6)


def emit_head(params: Params, z: Tensor, cfg: HypernetConfig) -> tuple[Tensor, Tensor]:
    """The policy head (W [A, H], b [A]) the hypernetwork emits for embedding z."""
    h = torch.tanh(torch.nn.functional.linear(z, params["hyper.0.weight"], params["hyper.0.bias"]))
    out = torch.nn.functional.linear(h, params["hyper.1.weight"], params["hyper.1.bias"])
    delta = out.reshape(cfg.act_dim, -1)
    return params["head.weight"] + delta[:, :-1], params["head.bias"] + delta[:, -1]


def hypernet_adapt(params: Params, context: Context, cfg: HypernetConfig) -> Params:
    """The adapted policy for one task, as a plain MLP params dict `policy.{i}.weight/bias`
    (tanh hidden layers, linear last layer = the emitted head). One forward pass."""
    w, b = emit_head(params, encode_context(params, context, cfg), cfg)
    n = len(cfg.trunk)
    out = {
        f"policy.{i}.{kind}": params[f"trunk.{i}.{kind}"]
        for i in range(n)
        for kind in ("weight", "bias")
    }
    out[f"policy.{n}.weight"], out[f"policy.{n}.bias"] = w, b
    return out


def policy_forward(policy: Params, obs: Tensor) -> Tensor:
    """A policy params dict (`policy.{i}.*`) applied to observations [..., O] -> actions."""
    return _mlp(policy, "policy.", obs, last_linear=True)


def bc_loss(policy: Params, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Weighted mean squared error of the policy's actions against the demonstrated ones;
    `batch = (obs [N, O], action [N, A], weights [N])`."""
    obs, act, w = batch
    err = (policy_forward(policy, obs) - act).square().sum(-1)
    return (err * w).sum() / w.sum().clamp_min(1e-6)


def hypernet_task_loss(
    params: Params,
    context: Context,
    query: Any,
    *,
    loss: Callable[[Params, Any], Tensor],
    cfg: HypernetConfig,
) -> Tensor:
    """Query loss of the policy emitted from one task's context."""
    return loss(hypernet_adapt(params, context, cfg), query)


def hypernet_meta_loss(
    params: Params, tasks: TaskBatch, *, loss: Callable[[Params, Any], Tensor], cfg: HypernetConfig
) -> Tensor:
    """Mean over tasks of the query loss after adapting on the context (`tasks.support` is a
    task-stacked `Context`)."""
    per_task = partial(hypernet_task_loss, loss=loss, cfg=cfg)
    losses: Tensor = map_tasks(per_task, (None, 0, 0), cfg.use_vmap)(
        params, tasks.support, tasks.query
    )
    return losses.mean()


# =============================================================================== object API
class ContextLearner:
    """A task-specific policy built from a context: `learner.adapt(context)` then
    `learner(obs)`. Mirrors `core.Learner`; adapting again replaces the policy (it does not
    accumulate), and `adapt` may be called with a bigger context to refine."""

    def __init__(self, params: Params, cfg: HypernetConfig) -> None:
        self.meta_params = params
        self.cfg = cfg
        self.params: Params | None = None

    def adapt(self, context: Context) -> ContextLearner:
        self.params = hypernet_adapt(self.meta_params, context, self.cfg)
        return self

    def __call__(self, obs: Tensor) -> Tensor:
        if self.params is None:
            raise TypeError("call adapt(context) before using the learner")
        return policy_forward(self.params, obs)


@dataclass(frozen=True)
class Hypernet:
    """The model-based learner bound to its query loss. Stateless: params are passed in.

    Same surface as `MAML`: `adapt(params, context)` (one forward pass; `steps` is accepted
    for the `MetaLearner` protocol and must be None or 1), `adapt_tasks`, `meta_loss`,
    `meta_grad`, `clone`.
    """

    config: HypernetConfig = field(default_factory=HypernetConfig)
    """Sizes and initialisation."""
    loss: Callable[[Params, Any], Tensor] = bc_loss
    """Query loss `(policy params, batch) -> scalar` (default: behaviour cloning, `bc_loss`)."""

    def init(self, seed: int = 0) -> Params:
        """Fresh meta-parameters."""
        return init_hypernet(self.config, seed)

    def adapt(self, params: Params, support: Context, steps: int | None = None) -> Params:
        """The adapted policy for one task's context (no gradient step)."""
        if steps not in (None, 1):
            raise ValueError("the hypernet adapts in one forward pass; steps must be None or 1")
        return hypernet_adapt(params, support, self.config)

    def adapt_tasks(self, params: Params, supports: Context) -> Params:
        """Adapted policies for a task-stacked context: [K, ...] per entry, no gradient."""
        with torch.no_grad():
            fn = partial(hypernet_adapt, cfg=self.config)
            out: Params = map_tasks(fn, (None, 0), self.config.use_vmap)(params, supports)
        return out

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """Mean post-adaptation query loss; differentiate w.r.t. params."""
        return hypernet_meta_loss(params, tasks, loss=self.loss, cfg=self.config)

    def meta_grad(self, params: Params, tasks: TaskBatch) -> tuple[Params, Tensor]:
        """(gradient dict, meta-loss) via `torch.func.grad_and_value`."""
        grads, loss = torch.func.grad_and_value(self.meta_loss)(params, tasks)
        return grads, loss

    def clone(self, params: Params) -> ContextLearner:
        """learn2learn-style handle: `clone(params).adapt(context)(obs)`."""
        return ContextLearner(params, self.config)


def policy_params_for_maml(cfg: HypernetConfig, seed: int = 0) -> Params:
    """The same policy architecture as the hypernet's (trunk + head) as a plain `policy.*`
    MLP, initialised like it: the MAML baseline's meta-parameters."""
    p = init_hypernet(cfg, seed)
    n = len(cfg.trunk)
    out = {f"policy.{i}.{k}": p[f"trunk.{i}.{k}"] for i in range(n) for k in ("weight", "bias")}
    out[f"policy.{n}.weight"], out[f"policy.{n}.bias"] = p["head.weight"], p["head.bias"]
    return out


def maml_bc_loss(cfg: HypernetConfig) -> Callable[[Params, Any], Tensor]:
    """Behaviour cloning on a batch that is either a `Context` (the support: MAML adapts on
    its (obs, action) pairs) or an (obs, action, weights) tuple (the query)."""

    def loss(policy: Params, batch: Any) -> Tensor:
        if isinstance(batch, Context):
            return bc_loss(policy, split_context(batch, cfg))
        return bc_loss(policy, batch)

    return loss


def fit(
    meta_grad: Callable[[Params, TaskBatch], tuple[Params, Tensor]],
    params: Params,
    sample: Callable[[], TaskBatch],
    iterations: int,
    lr: float = 1e-3,
) -> tuple[Params, list[float]]:
    """Adam on the meta-gradient for `iterations` meta-batches; returns (params, losses)."""
    leaves = leaf_params(params)
    opt = torch.optim.Adam(leaves.values(), lr=lr)
    losses = []
    for _ in range(iterations):
        grads, loss = meta_grad({k: v.detach() for k, v in leaves.items()}, sample())
        assign_grads(leaves, grads)
        opt.step()
        losses.append(float(loss))
    return {k: v.detach() for k, v in leaves.items()}, losses


# =============================================================================== demonstrations in the plaza
FAMILIES = ("reach_landmark", "follow_visitor", "keep_distance", "pace_match")
"""Families of the benchmark: their expert needs no gesture, so continuous BC is complete."""
DART_NOISE = 0.3
"""Std of the Gaussian noise added to the expert's executed commands while recording (DART,
Laskey et al. 2017): the labels stay the clean expert commands, and the states cover the
small mistakes a cloned policy makes, which keeps compounding errors in check."""


class Demos(NamedTuple):
    """Recorded transitions per task: obs/next_obs [n, T, O], expert action [n, T, A],
    reward [n, T]."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor


def record_demos(tasks: Sequence[Any], steps: int, seed: int, noise: float = DART_NOISE) -> Demos:
    """Run the scripted expert (which reads the true hidden parameters) with DART noise on
    each task (one plaza area per task) and record (obs, clean expert command, reward, next
    obs) for `steps` decisions."""
    from avatar_meta.world import scripted
    from avatar_meta.world.plaza import Plaza

    plaza = Plaza(num_areas=len(tasks), agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, task)
    obs, _ = plaza.reset()
    rng = np.random.default_rng(seed)
    n = len(tasks)
    o = np.zeros((n, steps, obs.shape[1]), np.float32)
    a = np.zeros((n, steps, ACT_DIM), np.float32)
    r = np.zeros((n, steps), np.float32)
    o2 = np.zeros_like(o)
    for t in range(steps):
        expert, _ = scripted.scripted_actions(plaza)
        executed = np.clip(expert + noise * rng.standard_normal(expert.shape), -1.0, 1.0)
        res = plaza.step(executed, np.zeros(n, np.int64))
        o[:, t], a[:, t], r[:, t] = obs, np.clip(expert, -1.0, 1.0), res.reward
        o2[:, t] = np.where(res.done[:, None], res.terminal_obs, res.obs)
        obs = res.obs
    return Demos(*(torch.as_tensor(x) for x in (o, a, r, o2)))


def standardise(d: Demos, mean: Tensor, std: Tensor) -> Demos:
    """Observations and next observations z-scored with (mean, std)."""
    return d._replace(obs=(d.obs - mean) / std, next_obs=(d.next_obs - mean) / std)


def context_rows(d: Demos, task: Tensor, idx: Tensor) -> Context:
    """Context of tasks `task [B]` at time indices `idx [B, K]`."""
    t = task[:, None]
    return make_context(d.obs[t, idx], d.action[t, idx], d.reward[t, idx], d.next_obs[t, idx])


def meta_batch_sampler(
    demos: Demos,
    *,
    episodes: int,
    context: int,
    query: int,
    meta_batch: int,
    gen: torch.Generator,
) -> Callable[[], TaskBatch]:
    """Meta-batches of `meta_batch` tasks: `context` rows from a task's first recorded
    episode (of `episodes`), `query` rows from the others."""
    n, total = demos.obs.shape[:2]
    ep = total // episodes

    def sample() -> TaskBatch:
        task = torch.randint(0, n, (meta_batch,), generator=gen)
        c_idx = torch.stack(
            [torch.randperm(ep, generator=gen)[:context] for _ in range(meta_batch)]
        )
        q_idx = ep + torch.randint(0, total - ep, (meta_batch, query), generator=gen)
        ctx = context_rows(demos, task, c_idx)
        t = task[:, None]
        batch = (demos.obs[t, q_idx], demos.action[t, q_idx], torch.ones(meta_batch, query))
        return TaskBatch(ctx, batch)

    return sample


def rollout_returns(
    policies: Params,
    tasks: Sequence[Any],
    seed: int,
    norm: tuple[Tensor, Tensor] | None = None,
    episodes: int = 1,
) -> np.ndarray:
    """Return of one deterministic episode per task, each area driven by its own adapted
    policy (task-stacked `policy.*` params [n, ...]) on observations standardised with
    `norm = (mean, std)`; gestures are never made. With `episodes` > 1, the mean return of
    that many consecutive episodes (the benchmark's families never end an episode early)."""
    from avatar_meta.world.plaza import Plaza

    plaza = Plaza(num_areas=len(tasks), agents_per_area=1, seed=seed)
    for area, task in enumerate(tasks):
        plaza.assign_task(area, task)
    obs, _ = plaza.reset()
    total = np.zeros(len(tasks))
    act = torch.func.vmap(policy_forward)
    with torch.no_grad():
        for _ in range(200 * episodes):
            o = torch.as_tensor(obs)
            if norm is not None:
                o = (o - norm[0]) / norm[1]
            a = act(policies, o[:, None, :])[:, 0].clamp(-1, 1).numpy()
            res = plaza.step(a.astype(np.float32), np.zeros(len(tasks), np.int64))
            total += res.reward
            obs = res.obs
    return total / episodes
