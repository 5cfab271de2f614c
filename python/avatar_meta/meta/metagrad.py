"""Meta-gradient RL: the discount gamma and the GAE lambda learned online by a meta-gradient.

Xu, van Hasselt, Silver 2018, "Meta-Gradient Reinforcement Learning" (NeurIPS). The return
used by the agent, here the GAE(gamma, lambda) advantage and lambda-return, depends on
meta-parameters eta = (gamma, lambda). The agent updates theta with an eta-dependent loss on a
batch tau; the meta-objective is the loss of the *updated* parameters theta' on the *next*
batch tau', computed with fixed reference values (gamma_ref, lambda_ref). Its gradient w.r.t.
eta goes through the update (online cross-validation):

    theta'    = theta - alpha * grad_theta L_inner(theta, tau; gamma(eta), lambda(eta))
    J'(eta)   = L_outer(theta', tau'; gamma_ref, lambda_ref)
    dJ'/deta  = grad_theta' L_outer(theta', tau')  .  (-alpha d/deta grad_theta L_inner(theta, tau; eta))

Here L_inner is the vanilla policy gradient on per-batch normalised GAE advantages (the
same inner loss MAML uses, `rl.losses.pg_loss`), and L_outer is the policy gradient with the
reference advantages (lambda_ref = 1: Monte-Carlo returns minus the baseline, as in the
paper). gamma = sigmoid(eta[0]) and lambda = sigmoid(eta[1]) stay in (0, 1).

The pieces, all pure functions of tensors so the other learners can call them:
- `rl.gae`, which is differentiable w.r.t. gamma and lambda passed as tensors.
- `TrajBatch`: episodes kept in time order [E, T, ...] (GAE needs the time structure, an
  `RLBatch` has flattened, precomputed advantages).
- `metagrad_pg_loss(params, batch, eta, ...)` / `make_inner_loss(policy, buffers, eta)`: the
  policy-gradient loss with the learned gamma/lambda, a `(params, batch) -> loss` function,
  so MAML/Meta-SGD can use it as their inner loss and take the meta-gradient w.r.t. eta too.
- `metagrad_objective`: the exact one-step meta-objective J'(eta) above (for tests and for
  differentiable inner loops); `meta_gradient`: the online form used with PPO, where theta' is
  the parameter vector the real (PPO, Adam, several epochs) update produced and the update is
  linearised as one gradient step for the meta-gradient (the paper's approximation, with its
  trace decay mu = 0). When theta' really is the one SGD step, the two give the same number.
- `train_ppo_metagrad`: PPO on the in-process plaza (or any `TaskEnv`) with the meta-gradient
  on gamma/lambda; `cfg.meta_lr = 0` (or `learn_gamma = learn_lambda = False`) is exactly the
  fixed-gamma/lambda baseline, same seeds, same env steps.

Gotchas
- No extra environment steps: batch i is the meta-objective's data for update i - 1 and the
  update data for update i (the paper's scheme). The two runs in the benchmark therefore use
  the same env-step budget.
- The meta-objective only sees the actor (the outer loss is a policy gradient), so only actor
  parameters are differentiated through; the critic is trained by PPO on the learned
  lambda-returns. The critic is not conditioned on gamma (the paper's optional trick): after a
  change of gamma it lags a few updates behind the new targets.
- With normalised advantages the scale of the meta-gradient does not depend on the reward
  scale, and `inner_lr` only scales it; Adam on eta makes even that irrelevant.
- The reference values define "better": the meta-gradient pulls gamma/lambda towards values
  whose update helps the gamma_ref/lambda_ref return. It is not an unbiased search over
  horizons; gamma may settle below gamma_ref when a shorter horizon gives lower-variance
  updates that still improve the reference return (that is the point of the method).
- sigmoid saturates: gamma is capped at `gamma_max` (logit clamp) so Adam cannot push it to
  exactly 1 where its gradient vanishes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from avatar_meta.envs.rollouts import TaskEnv, TaskRollout, collect
from avatar_meta.rl.gae import gae
from avatar_meta.rl.losses import normalize_advantages, weighted_mean
from avatar_meta.rl.policy import Buffers, Params, Policy, PolicySpec
from avatar_meta.tasks import Task

GammaLike = float | Tensor


# ---------------------------------------------------------------------------------------------
# batches that keep time order
# ---------------------------------------------------------------------------------------------
class TrajBatch(NamedTuple):
    """Episodes in time order, E episodes padded to T steps (a pytree of tensors)."""

    obs: Tensor  # [E, T, OBS] float
    mask: Tensor  # [E, T, G] bool, True = masked
    cont_action: Tensor  # [E, T, C] float, raw Gaussian sample
    gesture: Tensor  # [E, T, B] int64
    old_log_prob: Tensor  # [E, T] float, log-prob at collection
    reward: Tensor  # [E, T] float
    value: Tensor  # [E, T] float, critic at collection
    done: Tensor  # [E, T] bool, episode ended with this step
    interrupted: Tensor  # [E, T] bool, ended by the step limit (bootstrap)
    terminal_value: Tensor  # [E, T] float, V(terminal obs) at the last step, else 0
    weight: Tensor  # [E, T] float, 1 = real step, 0 = padding


def traj_batch(rollouts: Sequence[TaskRollout]) -> TrajBatch:
    """All episodes of `rollouts` (any tasks) as one `TrajBatch`, padded to the longest."""
    t_max = max(int(r.obs.shape[1]) for r in rollouts)

    def pad(x: np.ndarray) -> np.ndarray:
        widths = [(0, 0), (0, t_max - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
        return np.pad(x, widths)

    def cat(name: str) -> Tensor:
        if name == "terminal_value":
            parts = [pad(r.terminal_value) for r in rollouts]
        elif name == "gesture":
            parts = [pad(r.gesture)[..., None] for r in rollouts]
        else:
            parts = [pad(getattr(r, name)) for r in rollouts]
        return torch.from_numpy(np.concatenate(parts))

    return TrajBatch(
        obs=cat("obs"),
        mask=cat("mask").bool(),
        cont_action=cat("cont_action"),
        gesture=cat("gesture").long(),
        old_log_prob=cat("log_prob"),
        reward=cat("reward"),
        value=cat("value"),
        done=cat("done").bool(),
        interrupted=cat("interrupted").bool(),
        terminal_value=cat("terminal_value"),
        weight=cat("valid").float(),
    )


def batch_advantages(batch: TrajBatch, gamma: GammaLike, lam: GammaLike) -> tuple[Tensor, Tensor]:
    """GAE advantages and lambda-returns [E, T] of a `TrajBatch` (differentiable in gamma/lam).

    Padding has reward 0, value 0 and sits after a done step, so its advantages are 0."""
    zeros = torch.zeros_like(batch.value[..., 0])
    return gae(
        batch.reward,
        batch.value,
        batch.done,
        zeros,
        batch.interrupted,
        batch.terminal_value,
        gamma=gamma,
        lam=lam,
    )


# ---------------------------------------------------------------------------------------------
# meta-parameters and losses
# ---------------------------------------------------------------------------------------------
def logit(p: float) -> float:
    """Inverse sigmoid."""
    return math.log(p / (1.0 - p))


def init_eta(gamma: float, lam: float) -> Tensor:
    """The meta-parameters eta = (logit gamma, logit lambda), a [2] float32 tensor."""
    for name, v in (("gamma", gamma), ("lambda", lam)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"initial {name} must be in (0, 1) (it is sigmoid-parameterised)")
    return torch.tensor([logit(gamma), logit(lam)], dtype=torch.float32)


def gamma_lambda(eta: Tensor) -> tuple[Tensor, Tensor]:
    """(gamma, lambda) = sigmoid(eta), each a 0-d tensor differentiable w.r.t. eta."""
    g = torch.sigmoid(eta)
    return g[0], g[1]


def metagrad_pg_loss(
    params: Params,
    batch: TrajBatch,
    eta: Tensor | tuple[float, float],
    *,
    policy: Policy,
    buffers: Buffers,
) -> Tensor:
    """-mean(log pi * normalised GAE(gamma, lambda) advantage) over the real steps.

    `eta`: a [2] tensor of logits (learned values) or a `(gamma, lambda)` pair of floats
    (fixed values, e.g. the reference of the meta-objective; lambda may be exactly 1)."""
    if isinstance(eta, Tensor):
        gamma, lam = gamma_lambda(eta)
        adv, _ = batch_advantages(batch, gamma, lam)
    else:
        adv, _ = batch_advantages(batch, eta[0], eta[1])
    w = batch.weight.reshape(-1)
    flat = normalize_advantages(adv.reshape(-1), w)
    obs = batch.obs.reshape(-1, batch.obs.shape[-1])
    lp = policy.log_prob(
        params,
        buffers,
        obs,
        batch.mask.reshape(-1, batch.mask.shape[-1]),
        batch.cont_action.reshape(-1, batch.cont_action.shape[-1]),
        batch.gesture.reshape(-1, batch.gesture.shape[-1]),
    )
    return -weighted_mean(lp * flat, w)


LossFn = Callable[[Params, TrajBatch], Tensor]


def make_inner_loss(policy: Policy, buffers: Buffers, eta: Tensor) -> LossFn:
    """`(params, batch) -> loss` with the learned gamma/lambda: the inner loss the other
    learners (MAML, Meta-SGD) can plug in. Keep `eta` a leaf requiring grad (or close over a
    `torch.func` argument) and the meta-gradient of their outer loss reaches it as well."""

    def loss(params: Params, batch: TrajBatch) -> Tensor:
        return metagrad_pg_loss(params, batch, eta, policy=policy, buffers=buffers)

    return loss


@dataclass(frozen=True)
class MetaGradConfig:
    """Hyperparameters of the meta-gradient on (gamma, lambda)."""

    gamma_init: float = 0.99
    """Initial discount (the benchmark starts from 0.6)."""
    lam_init: float = 0.95
    """Initial GAE lambda (the benchmark starts from 0.3)."""
    ref_gamma: float = 0.99
    """gamma_ref of the meta-objective (the paper's gamma')."""
    ref_lam: float = 1.0
    """lambda_ref of the meta-objective (the paper uses 1: Monte-Carlo returns)."""
    meta_lr: float = 0.1
    """Adam learning rate on the logits eta (0 = fixed gamma/lambda, the baseline)."""
    inner_lr: float = 1.0
    """alpha of the linearised update theta' = theta - alpha grad L_inner; it only scales
    the meta-gradient (Adam removes the scale), but it matters for `metagrad_objective`."""
    learn_gamma: bool = True
    """Learn the discount."""
    learn_lambda: bool = True
    """Learn the GAE lambda."""
    gamma_max: float = 0.998
    """Upper cap on gamma (and lambda) through a clamp of the logits: sigmoid saturates."""
    value_min: float = 0.05
    """Lower cap on gamma and lambda."""
    actor_prefix: str = "actor."
    """Parameters the meta-gradient differentiates through (the outer loss is actor-only)."""

    @property
    def learns(self) -> bool:
        return self.meta_lr > 0 and (self.learn_gamma or self.learn_lambda)


def _actor(params: Params, prefix: str) -> tuple[Params, Params]:
    sub = {k: v for k, v in params.items() if k.startswith(prefix)}
    rest = {k: v for k, v in params.items() if not k.startswith(prefix)}
    return sub, rest


def metagrad_objective(
    eta: Tensor,
    params: Params,
    update_batch: TrajBatch,
    eval_batch: TrajBatch,
    *,
    policy: Policy,
    buffers: Buffers,
    cfg: MetaGradConfig,
    eval_buffers: Buffers | None = None,
) -> Tensor:
    """Exact one-step meta-objective J'(eta): the reference-gamma/lambda PG loss on
    `eval_batch` of theta' = theta - inner_lr * grad L_inner(theta, update_batch; eta).
    Differentiable w.r.t. eta (and params)."""
    actor, rest = _actor(params, cfg.actor_prefix)

    def inner(sub: Params) -> Tensor:
        return metagrad_pg_loss({**rest, **sub}, update_batch, eta, policy=policy, buffers=buffers)

    grads = torch.func.grad(inner)(actor)
    updated = {**rest, **{k: actor[k] - cfg.inner_lr * grads[k] for k in actor}}
    return metagrad_pg_loss(
        updated,
        eval_batch,
        (cfg.ref_gamma, cfg.ref_lam),
        policy=policy,
        buffers=buffers if eval_buffers is None else eval_buffers,
    )


def meta_gradient(
    eta: Tensor,
    params_before: Params,
    update_batch: TrajBatch,
    params_after: Params,
    eval_batch: TrajBatch,
    *,
    policy: Policy,
    buffers_before: Buffers,
    buffers_after: Buffers,
    cfg: MetaGradConfig,
) -> tuple[Tensor, Tensor]:
    """(dJ'/deta [2], J') for an update that took params_before to params_after.

    v = grad_theta' L_outer(params_after, eval_batch) (reference gamma/lambda); the update is
    linearised as theta' = theta - inner_lr * grad L_inner(theta, update_batch; eta), so
    dJ'/deta = -inner_lr * d/deta [v . grad_theta L_inner(params_before; eta)]. Equals
    `torch.func.grad(metagrad_objective)` when params_after is that one gradient step."""
    after, after_rest = _actor({k: v.detach() for k, v in params_after.items()}, cfg.actor_prefix)
    before, before_rest = _actor(
        {k: v.detach() for k, v in params_before.items()}, cfg.actor_prefix
    )
    ref = (cfg.ref_gamma, cfg.ref_lam)

    def outer(sub: Params) -> Tensor:
        return metagrad_pg_loss(
            {**after_rest, **sub}, eval_batch, ref, policy=policy, buffers=buffers_after
        )

    v, j = torch.func.grad_and_value(outer)(after)

    def directional(e: Tensor) -> Tensor:
        def inner(sub: Params) -> Tensor:
            return metagrad_pg_loss(
                {**before_rest, **sub}, update_batch, e, policy=policy, buffers=buffers_before
            )

        g = torch.func.grad(inner)(before)
        return -cfg.inner_lr * sum((v[k] * g[k]).sum() for k in g)  # type: ignore[return-value]

    grad_eta = torch.func.grad(directional)(eta.detach())
    mask = torch.tensor([float(cfg.learn_gamma), float(cfg.learn_lambda)])
    return grad_eta * mask, j.detach()


class MetaGradState:
    """eta as a leaf with its Adam optimiser; `step(grad)` applies one meta-update."""

    def __init__(self, cfg: MetaGradConfig) -> None:
        self.cfg = cfg
        self.eta = init_eta(cfg.gamma_init, cfg.lam_init).requires_grad_(True)
        self.opt = torch.optim.Adam([self.eta], lr=max(cfg.meta_lr, 1e-12))
        self._lo, self._hi = logit(cfg.value_min), logit(cfg.gamma_max)

    @property
    def gamma(self) -> float:
        return float(torch.sigmoid(self.eta[0].detach()))

    @property
    def lam(self) -> float:
        return float(torch.sigmoid(self.eta[1].detach()))

    def step(self, grad: Tensor) -> None:
        if not self.cfg.learns:
            return
        self.eta.grad = grad.detach().clone()
        self.opt.step()
        with torch.no_grad():
            self.eta.clamp_(self._lo, self._hi)


# ---------------------------------------------------------------------------------------------
# PPO with meta-learned gamma / lambda on a TaskEnv
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetaGradPPOConfig:
    """The PPO loop of `train_ppo_metagrad` (and of the fixed-gamma/lambda baseline)."""

    meta: MetaGradConfig = field(default_factory=MetaGradConfig)
    """The meta-gradient (meta_lr = 0: fixed gamma/lambda)."""
    iterations: int = 40
    """PPO updates (each on one freshly collected batch)."""
    episodes_per_iter: int = 8
    """Episodes per batch (per task), 200 decisions each."""
    ppo_lr: float = 3e-4
    """Adam learning rate of the policy."""
    ppo_epochs: int = 4
    """PPO passes per batch."""
    ppo_minibatches: int = 4
    """Minibatches per pass."""
    ent_coef: float = 0.01
    """Entropy bonus (keeps the log-std from collapsing)."""
    hidden: tuple[int, ...] = (64, 64)
    """Policy MLP widths."""
    eval_episodes: int = 16
    """Deterministic evaluation episodes (per task) after training (not counted as training
    steps)."""
    seed: int = 0
    """Seeds the policy initialisation, action sampling and the world."""


@dataclass
class MetaGradHistory:
    """What one run of `train_ppo_metagrad` recorded."""

    gamma: list[float] = field(default_factory=list)
    lam: list[float] = field(default_factory=list)
    train_return: list[float] = field(default_factory=list)
    meta_loss: list[float] = field(default_factory=list)
    env_steps: list[int] = field(default_factory=list)
    eval_return: float = float("nan")
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_ppo_metagrad(
    env: TaskEnv,
    tasks: Sequence[Task],
    cfg: MetaGradPPOConfig,
    log_dir: str | None = None,
    tag: str = "metagrad",
) -> MetaGradHistory:
    """PPO on `tasks` where GAE uses gamma/lambda learned by the meta-gradient.

    Iteration i: collect batch i with theta_i; if i > 0, meta-gradient of update i - 1 using
    batch i as the held-out data and step eta; then PPO on batch i with the current
    gamma/lambda. With `cfg.meta.learns` False this is plain PPO with fixed gamma/lambda.
    With `log_dir`, gamma, lambda, the return and the meta-loss go to TensorBoard (x axis:
    env steps) under `tag/...`.
    """
    from avatar_meta.training.ppo_baseline import (
        PPOAgent,
        PPOSettings,
        evaluate_shared,
        mean_returns,
        plain_obs,
        rollouts_to_batch,
        shared_policy_fn,
    )

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    settings = PPOSettings(
        lr=cfg.ppo_lr,
        epochs=cfg.ppo_epochs,
        minibatches=cfg.ppo_minibatches,
        ent_coef=cfg.ent_coef,
    )
    agent = PPOAgent(PolicySpec(hidden=cfg.hidden), settings, seed=cfg.seed)
    state = MetaGradState(cfg.meta)
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir)
    hist = MetaGradHistory()
    prev: tuple[Params, Buffers, TrajBatch] | None = None
    steps = 0
    for _ in range(cfg.iterations):
        rollouts = collect(env, shared_policy_fn(agent), tasks, cfg.episodes_per_iter)
        steps += sum(r.env_steps for r in rollouts)
        batch = traj_batch(rollouts)
        if prev is not None and cfg.meta.learns:
            grad, j = meta_gradient(
                state.eta,
                prev[0],
                prev[2],
                agent.params,
                batch,
                policy=agent.policy,
                buffers_before=prev[1],
                buffers_after=agent.buffers,
                cfg=cfg.meta,
            )
            state.step(grad)
            hist.meta_loss.append(float(j))
        if cfg.meta.learns:
            prev = ({k: v.detach().clone() for k, v in agent.params.items()}, agent.buffers, batch)
        gamma, lam = state.gamma, state.lam
        agent.update(rollouts_to_batch(rollouts, plain_obs, gamma, lam))
        ret = float(np.mean(mean_returns(rollouts)))
        hist.gamma.append(gamma)
        hist.lam.append(lam)
        hist.train_return.append(ret)
        hist.env_steps.append(steps)
        if writer is not None:
            writer.add_scalar(f"{tag}/gamma", gamma, steps)
            writer.add_scalar(f"{tag}/lambda", lam, steps)
            writer.add_scalar(f"{tag}/return", ret, steps)
            if hist.meta_loss:
                writer.add_scalar(f"{tag}/meta_loss", hist.meta_loss[-1], steps)
    returns, _ = evaluate_shared(env, agent, tasks, cfg.eval_episodes)
    hist.eval_return = float(np.mean(returns))
    hist.seconds = time.perf_counter() - start
    if writer is not None:
        writer.add_scalar(f"{tag}/eval_return", hist.eval_return, steps)
        writer.close()
    return hist
