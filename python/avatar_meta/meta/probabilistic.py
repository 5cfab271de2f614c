"""Probabilistic MAML: a learned Gaussian over the initial parameters, sampled then adapted.

Finn, Xu & Levine 2018, "Probabilistic Model-Agnostic Meta-Learning" (PLATIPUS, NeurIPS);
see also Ravi & Beatson 2019, "Amortized Bayesian Meta-Learning" (ABML, ICLR), and for the
training objective Gordon et al. 2019, "Meta-Learning Probabilistic Inference for
Prediction" (ML-PIP, ICLR). The model (PLATIPUS's test-time procedure):

    prior          theta ~ N(mu, diag(sigma^2))                 mu, log sigma: meta-learned
    task shift     mu_i = mu - gamma * grad_mu L(mu, D_support)  gamma: meta-learned scalar
    sample         theta_s = mu_i + sigma * eps_s,   eps_s ~ N(0, I),   s = 1..S
    adapt          phi_s = theta_s - alpha * grad L(theta_s, D_support)   (MAML inner steps)
    predictive     p(y | x, D_support) = 1/S sum_s N(y | f_phi_s(x), noise^2)

Each sample is adapted to the support set *after* it is drawn, so the samples agree where the
support points pin the function down and disagree away from them: the predictive spread is
small near the data and large where the few points leave the task ambiguous (a sine or a
line?), as far as the inner steps pull them together (one step of alpha = 0.01 pulls
little). `sample_params(..., support=None)` draws K parameter sets from the prior for
exploration on a new task before any data; with a support set, K adapted hypotheses.

Training objective (differs from PLATIPUS's ELBO, on purpose): the negative log predictive
likelihood of the query points under the S-sample mixture (the ML-PIP objective, with the
prior-given-support as the proposal),

    pointwise (default)  L_i = -1/Q sum_j log 1/S sum_s N(y_j | f_phi_s(x_j), noise^2)
    joint=True           L_i = -1/Q log 1/S sum_s prod_j N(y_j | f_phi_s(x_j), noise^2)

It is what the held-out metric measures, and needs no inference network for q(theta |
support, query) and no KL weight to tune. The joint form makes each sample explain a whole
query set (coherent hypotheses: "this is a line"); it works when the model can fit the tasks
(the slope test in tests/test_probabilistic.py) but, measured on the sine-or-line benchmark
with an underfit network (600-3000 iterations), it pushed the learned noise to 5-7 and lost
to MAML, while the pointwise form wins (docs/algorithms.md). The observation noise is a
meta-learned scalar; for the best held-out likelihood at a given support size, refit it on
validation tasks of that size (`benchmarks.probabilistic_bench.calibrate_noise`): the learned
value is a compromise over the support sizes seen in training.

The benchmark (`results.probabilistic` of `avatar-meta bench algorithms`) is in
`benchmarks/probabilistic_bench.py`.

Gotchas
- The inner loop uses the plain support loss (MSE), not the noise-scaled likelihood: a
  Gaussian NLL's gradient grows as the learned noise shrinks, so the same alpha would become
  unstable during training.
- Random draws are passed in (`eps`, from `draw_eps`), never made inside: the pure functions
  are deterministic, vmap-able and testable by finite differences; use a seeded generator.
- Start the prior narrow (`init_log_std` = -5: training starts as MAML with a learned noise)
  and let the meta-gradient widen it; starting wide (-2.5, sigma ~ 0.08 on every weight)
  slowed the fit of the mean so much that it lost to MAML at equal iterations.
- The learned noise is tuned to the number of training samples S; evaluating with many more
  samples gives slightly wide (conservative) intervals.
- `sigma` can collapse to ~0 when the tasks are not ambiguous (the method then is MAML with a
  learned noise); `min_log_std` floors it. It cannot represent correlations between weights
  (diagonal Gaussian), so its function-space diversity comes from the nonlinearity.
- The winner-takes-most gradient of a log-mean-exp over samples needs a few samples (S >= 5)
  during training; with S = 1 it is MAML with a Gaussian likelihood.
- Three inner steps at alpha = 0.01 diverged (NaN) within 600 benchmark iterations; there is
  no gradient clipping.
- gamma (the mean shift's step) is learned at 10x the mean's rate and multiplies the raw
  support gradient: unbounded it ran away on the sine-or-line benchmark (to -0.52 with seed
  1, to 0.49 with seed 0 on two threads) and the training diverged. Bound it with
  `max_gamma` (the benchmark uses the inner step size, 0.01).
- Cost: S adapted copies per task, so S times MAML's inner-loop compute and memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from avatar_meta.meta.core import (
    ForwardFn,
    LossFn,
    Params,
    TaskBatch,
    adapt,
    map_tasks,
    select_keys,
    step_sizes,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class ProbabilisticConfig:
    """Hyperparameters of probabilistic MAML."""

    inner_lr: float = 0.01
    """alpha: step size of the inner steps each sample takes on the support loss."""
    inner_steps: int = 1
    """Inner steps per sample during meta-training (and by default at test time)."""
    samples: int = 5
    """Parameter samples S per task during meta-training (more at evaluation is fine)."""
    init_log_std: float = -5.0
    """Initial log sigma of every parameter of the prior."""
    min_log_std: float = -8.0
    """Floor on log sigma (keeps the prior a distribution)."""
    init_log_noise: float = 0.0
    """Initial log of the observation noise std."""
    init_gamma: float = 0.01
    """Initial step gamma of the task shift of the prior mean (learned)."""
    stochastic_prefix: str | None = None
    """Only parameters whose name starts with this get a learned std (the rest of the prior
    is a point mass at its mean, e.g. "2." = a stochastic last layer); None = all."""
    adapt_prefix: str | None = None
    """The inner steps adapt only parameters starting with this (e.g. the head); None = all."""
    mean_shift: bool = True
    """Shift the prior mean by -gamma * grad L(mu, support) before sampling (PLATIPUS)."""
    max_gamma: float | None = None
    """Use gamma clamped to [0, max_gamma] in the mean shift (None = unbounded). gamma is
    learned at 10x the mean's rate and multiplies the raw support gradient, so on tasks with
    large gradients it can run away (seen: 0.49 and -0.52) and the training diverges."""
    joint: bool = False
    """Objective: True = likelihood of each task's query set as a whole under the mixture
    (a sample must explain every point); False = mean per-point mixture likelihood."""
    first_order: bool = False
    """Detach the inner gradients (no second-order terms)."""
    use_vmap: bool = True
    """Batch tasks with torch.func.vmap (False = per-task Python loop, same numbers)."""


class ProbParams(NamedTuple):
    """Meta-parameters: the prior's mean and log std (per parameter), the observation noise's
    log std and the task-shift step gamma (scalars)."""

    mean: Params
    log_std: Params
    log_noise: Tensor
    gamma: Tensor


def init_probabilistic(params: Params, cfg: ProbabilisticConfig) -> ProbParams:
    """Meta-parameters around an initialisation `params` (the prior's mean)."""
    return ProbParams(
        {k: v.detach().clone() for k, v in params.items()},
        {
            k: torch.full_like(v, cfg.init_log_std)
            for k, v in params.items()
            if cfg.stochastic_prefix is None or k.startswith(cfg.stochastic_prefix)
        },
        torch.tensor(cfg.init_log_noise),
        torch.tensor(cfg.init_gamma),
    )


def draw_eps(
    meta: ProbParams, samples: int, gen: torch.Generator, tasks: int | None = None
) -> Params:
    """Standard normal draws shaped like the stochastic parameters, `[tasks?, samples,
    *shape]`."""
    lead = (samples,) if tasks is None else (tasks, samples)
    return {k: torch.randn(*lead, *v.shape, generator=gen) for k, v in meta.log_std.items()}


def _std(meta: ProbParams, cfg: ProbabilisticConfig) -> Params:
    return {k: torch.exp(v.clamp_min(cfg.min_log_std)) for k, v in meta.log_std.items()}


def prior_samples(meta: ProbParams, eps: Params, cfg: ProbabilisticConfig) -> Params:
    """Samples from the prior, `[S, ...]` per entry (no data seen)."""
    std = _std(meta, cfg)
    s = next(iter(eps.values())).shape[0]
    return {
        k: meta.mean[k] + std[k] * eps[k]
        if k in std
        else meta.mean[k].expand(s, *meta.mean[k].shape)
        for k in meta.mean
    }


def posterior_samples(
    meta: ProbParams,
    support: Any,
    eps: Params,
    *,
    inner_loss: LossFn,
    cfg: ProbabilisticConfig,
    steps: int | None = None,
) -> Params:
    """S adapted parameter sets for one task, `[S, ...]`: shift the prior mean toward the
    support set, sample, then take `steps` inner steps from each sample."""
    mean = meta.mean
    if cfg.mean_shift:
        g = torch.func.grad(inner_loss)(mean, support)
        if cfg.first_order:
            g = {k: v.detach() for k, v in g.items()}
        gamma = meta.gamma if cfg.max_gamma is None else meta.gamma.clamp(0.0, cfg.max_gamma)
        mean = {k: mean[k] - gamma * g[k] for k in mean}
    std = _std(meta, cfg)
    n = cfg.inner_steps if steps is None else steps
    lrs = step_sizes(cfg.inner_lr, n, 1.0)

    keys = select_keys(mean, cfg.adapt_prefix)

    def one(e: Params) -> Params:
        theta = {k: mean[k] + std[k] * e[k] if k in std else mean[k] for k in mean}
        return adapt(inner_loss, theta, support, lrs, keys, cfg.first_order)

    out: Params = torch.func.vmap(one)(eps)
    return out


def gaussian_log_lik(pred: Tensor, y: Tensor, log_noise: Tensor) -> Tensor:
    """Elementwise log N(y | pred, exp(log_noise)^2)."""
    return -0.5 * ((y - pred) / torch.exp(log_noise)).square() - log_noise - HALF_LOG_2PI


def sample_log_liks(
    meta: ProbParams,
    support: Any,
    query: tuple[Tensor, Tensor],
    eps: Params,
    *,
    forward: ForwardFn,
    inner_loss: LossFn,
    cfg: ProbabilisticConfig,
    steps: int | None = None,
) -> Tensor:
    """log N(y_j | f_phi_s(x_j), noise^2) for every sample s and query point j: [S, Q]."""
    phis = posterior_samples(meta, support, eps, inner_loss=inner_loss, cfg=cfg, steps=steps)
    x, y = query
    preds = torch.func.vmap(forward, in_dims=(0, None))(phis, x)  # [S, Q, 1]
    return gaussian_log_lik(preds, y, meta.log_noise).sum(-1)


def prob_task_loss(
    meta: ProbParams,
    support: Any,
    query: tuple[Tensor, Tensor],
    eps: Params,
    *,
    forward: ForwardFn,
    inner_loss: LossFn,
    cfg: ProbabilisticConfig,
) -> Tensor:
    """Joint: -1/Q log mean_s prod_j N(y_j | f_phi_s(x_j), noise^2); pointwise:
    -1/Q sum_j log mean_s N(y_j | f_phi_s(x_j), noise^2). One task."""
    ll = sample_log_liks(meta, support, query, eps, forward=forward, inner_loss=inner_loss, cfg=cfg)
    s, q = ll.shape
    if cfg.joint:
        return -(torch.logsumexp(ll.sum(-1), 0) - math.log(s)) / q
    return -(torch.logsumexp(ll, 0) - math.log(s)).mean()


def prob_meta_loss(
    meta: ProbParams,
    tasks: TaskBatch,
    eps: Params,
    *,
    forward: ForwardFn,
    inner_loss: LossFn,
    cfg: ProbabilisticConfig,
) -> Tensor:
    """Mean over tasks of `prob_task_loss`; `eps` is `[tasks, S, ...]` (`draw_eps`)."""
    per_task = partial(prob_task_loss, forward=forward, inner_loss=inner_loss, cfg=cfg)
    losses: Tensor = map_tasks(per_task, (None, 0, 0, 0), cfg.use_vmap)(
        meta, tasks.support, tasks.query, eps
    )
    return losses.mean()


@dataclass(frozen=True)
class ProbabilisticMAML:
    """Probabilistic MAML bound to its model and support loss. Stateless: `ProbParams` are
    passed in; randomness comes from the `torch.Generator` you pass."""

    forward: ForwardFn
    """The model as a pure function `forward(params, x) -> prediction`."""
    inner_loss: LossFn
    """Support loss `(params, batch) -> scalar` of the inner steps (e.g. MSE)."""
    config: ProbabilisticConfig = field(default_factory=ProbabilisticConfig)
    """Hyperparameters."""

    def init(self, params: Params) -> ProbParams:
        """Meta-parameters whose prior is centred on `params`."""
        return init_probabilistic(params, self.config)

    def sample_params(
        self,
        meta: ProbParams,
        k: int,
        gen: torch.Generator,
        support: Any | None = None,
        steps: int | None = None,
    ) -> Params:
        """K parameter sets `[K, ...]` for exploration: from the prior when `support` is
        None (a new task, no data yet), else K hypotheses adapted to the support set."""
        eps = draw_eps(meta, k, gen)
        with torch.no_grad():
            if support is None:
                return prior_samples(meta, eps, self.config)
            return posterior_samples(
                meta, support, eps, inner_loss=self.inner_loss, cfg=self.config, steps=steps
            )

    def adapt(self, params: ProbParams, support: Any, steps: int | None = None) -> Params:
        """The posterior mean's adapted parameters (one deterministic hypothesis: eps = 0)."""
        zero = {k: torch.zeros(1, *v.shape) for k, v in params.log_std.items()}
        phis = posterior_samples(
            params, support, zero, inner_loss=self.inner_loss, cfg=self.config, steps=steps
        )
        return {k: v[0] for k, v in phis.items()}

    def predict(
        self,
        meta: ProbParams,
        support: Any,
        x: Tensor,
        samples: int,
        gen: torch.Generator,
        steps: int | None = None,
    ) -> Tensor:
        """Function samples at `x`: `[samples, *forward(x).shape]` (add noise for y)."""
        phis = self.sample_params(meta, samples, gen, support, steps)
        with torch.no_grad():
            out: Tensor = torch.func.vmap(self.forward, in_dims=(0, None))(phis, x)
        return out

    def meta_loss(self, params: ProbParams, tasks: TaskBatch, eps: Params | None = None) -> Tensor:
        """Mean negative predictive log-likelihood of the query sets; `eps [tasks, S, ...]`
        (drawn from a fixed seed when omitted)."""
        if eps is None:
            k = int(pytree.tree_leaves(tasks.support)[0].shape[0])
            eps = draw_eps(params, self.config.samples, torch.Generator().manual_seed(0), k)
        return prob_meta_loss(
            params, tasks, eps, forward=self.forward, inner_loss=self.inner_loss, cfg=self.config
        )

    def meta_grad(
        self, params: ProbParams, tasks: TaskBatch, eps: Params
    ) -> tuple[ProbParams, Tensor]:
        """(gradient with the structure of ProbParams, meta-loss)."""
        grads, loss = torch.func.grad_and_value(self.meta_loss)(params, tasks, eps)
        return ProbParams(*grads), loss


def fit(
    learner: ProbabilisticMAML,
    meta: ProbParams,
    sample: Callable[[], TaskBatch],
    iterations: int,
    gen: torch.Generator,
    lr: float = 1e-3,
    dist_lr_scale: float = 10.0,
) -> tuple[ProbParams, list[float]]:
    """Adam on the meta-gradient (fresh eps every iteration from `gen`). The log stds, the
    noise and gamma get `dist_lr_scale` times the mean's learning rate: they start far
    from their useful values (log units) and Adam's steps are ~lr each."""
    flat, spec = pytree.tree_flatten(meta)
    leaves: list[Tensor] = [x.detach().clone().requires_grad_(True) for x in flat]
    n_mean = len(meta.mean)
    groups: list[dict[str, Any]] = [
        {"params": leaves[:n_mean]},
        {"params": leaves[n_mean:], "lr": lr * dist_lr_scale},
    ]
    opt = torch.optim.Adam(
        groups,
        lr=lr,
    )
    losses = []
    for _ in range(iterations):
        tasks = sample()
        current: ProbParams = pytree.tree_unflatten([x.detach() for x in leaves], spec)
        k = int(pytree.tree_leaves(tasks.support)[0].shape[0])
        eps = draw_eps(current, learner.config.samples, gen, k)
        grads, loss = learner.meta_grad(current, tasks, eps)
        for x, g in zip(leaves, pytree.tree_leaves(grads), strict=True):
            x.grad = g.detach().clone()
        opt.step()
        losses.append(float(loss))
    return pytree.tree_unflatten([x.detach() for x in leaves], spec), losses
