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
to MAML, while the pointwise form won in the quick run and came within 0.01 nats in the full
run (docs/algorithms.md). The observation noise is a meta-learned scalar.

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
- Cost: S adapted copies per task, so S times MAML's inner-loop compute and memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
from avatar_meta.meta.maml import MAML, MAMLConfig
from avatar_meta.meta.sinusoid import init_mlp, mlp, mse_loss

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
        mean = {k: mean[k] - meta.gamma * g[k] for k in mean}
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


# =============================================================================== benchmark
@dataclass(frozen=True)
class AmbiguousConfig:
    """Ambiguous few-shot regression (the sine-or-line setup of Finn, Xu & Levine 2018)."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    """Sine tasks: amplitude range."""
    phase: tuple[float, float] = (0.0, math.pi)
    """Sine tasks: phase range."""
    slope: tuple[float, float] = (-3.0, 3.0)
    """Line tasks: slope range."""
    intercept: tuple[float, float] = (-3.0, 3.0)
    """Line tasks: intercept range."""
    x_range: tuple[float, float] = (-5.0, 5.0)
    """Inputs x."""
    noise: float = 0.3
    """Std of the Gaussian noise on every y."""
    k_shot: tuple[int, int] = (1, 5)
    """Support points per task: drawn uniformly in this range per meta-batch."""
    query: int = 10
    """Query points per task during meta-training."""
    hidden: tuple[int, ...] = (40, 40)
    """Hidden widths of the ReLU MLP (both learners)."""
    meta_batch: int = 25
    """Tasks per meta-iteration."""
    iterations: int = 3000
    """Meta-iterations (both learners)."""
    lr: float = 3e-3
    """Adam learning rate (both learners)."""
    eval_shots: tuple[int, ...] = (1, 3, 5)
    """Support sizes at evaluation."""
    eval_tasks: int = 500
    """Held-out tasks per support size."""
    eval_points: int = 50
    """Held-out query points per task."""
    eval_samples: int = 50
    """Parameter samples at evaluation."""
    interval: float = 0.9
    """Central predictive interval whose coverage is reported."""
    seed: int = 0
    """Seeds the initialisation, the tasks and the samples."""


def sample_ambiguous(
    n: int, cfg: AmbiguousConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Task coefficients `(is_sine [n], a [n,1,1], b [n,1,1])`: amplitude and phase for
    sines, slope and intercept for lines (draw the points with `points`)."""
    sine = torch.rand(n, generator=gen) < 0.5
    a = torch.where(
        sine,
        torch.empty(n).uniform_(*cfg.amplitude, generator=gen),
        torch.empty(n).uniform_(*cfg.slope, generator=gen),
    )
    b = torch.where(
        sine,
        torch.empty(n).uniform_(*cfg.phase, generator=gen),
        torch.empty(n).uniform_(*cfg.intercept, generator=gen),
    )
    return sine, a[:, None, None], b[:, None, None]


def points(
    task: tuple[Tensor, Tensor, Tensor], k: int, cfg: AmbiguousConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(x, y) `[n, k, 1]` with noise, for the given tasks."""
    sine, a, b = task
    x = torch.empty(a.shape[0], k, 1).uniform_(*cfg.x_range, generator=gen)
    f = torch.where(sine[:, None, None], a * torch.sin(x - b), a * x + b)
    return x, f + cfg.noise * torch.randn(f.shape, generator=gen)


def _batch(cfg: AmbiguousConfig, gen: torch.Generator, n: int, k: int, q: int) -> TaskBatch:
    task = sample_ambiguous(n, cfg, gen)
    return TaskBatch(points(task, k, cfg, gen), points(task, q, cfg, gen))


def _sampler(cfg: AmbiguousConfig, gen: torch.Generator) -> Callable[[], TaskBatch]:
    def sample() -> TaskBatch:
        k = int(torch.randint(cfg.k_shot[0], cfg.k_shot[1] + 1, (1,), generator=gen))
        return _batch(cfg, gen, cfg.meta_batch, k, cfg.query)

    return sample


def _fit_maml(
    maml: MAML, params: Params, sample: Callable[[], TaskBatch], cfg: AmbiguousConfig
) -> Params:
    from avatar_meta.meta.hypernet import fit as fit_dict

    return fit_dict(maml.meta_grad, params, sample, cfg.iterations, cfg.lr)[0]


def _normal_quantile(p: float) -> float:
    return float(torch.special.ndtri(torch.tensor(p)))


def bench(
    quick: bool = False,
    cfg: AmbiguousConfig | None = None,
    pcfg: ProbabilisticConfig | None = None,
) -> dict[str, Any]:
    """Probabilistic MAML vs MAML (+ a Gaussian noise level fit on validation tasks) on
    ambiguous sine-or-line regression; `results.probabilistic` of `bench algorithms`."""
    cfg = cfg or AmbiguousConfig()
    if quick:
        cfg = replace(cfg, iterations=min(cfg.iterations, 600), eval_tasks=150)
    start = time.perf_counter()
    pcfg = pcfg or ProbabilisticConfig()
    init = init_mlp(cfg.hidden, cfg.seed)
    learner = ProbabilisticMAML(mlp, mse_loss, pcfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    meta, p_curve = fit(
        learner, learner.init(init), _sampler(cfg, gen), cfg.iterations, gen, cfg.lr
    )
    p_seconds = time.perf_counter() - t0

    maml = MAML(
        mse_loss,
        mse_loss,
        MAMLConfig(
            inner_lr=pcfg.inner_lr,
            inner_lr_decay=1.0,
            inner_steps=pcfg.inner_steps,
            adapt_prefix=pcfg.adapt_prefix,
        ),
        forward=mlp,
    )
    t0 = time.perf_counter()
    m_params = _fit_maml(maml, init, _sampler(cfg, torch.Generator().manual_seed(cfg.seed)), cfg)
    m_seconds = time.perf_counter() - t0

    z = _normal_quantile(0.5 + cfg.interval / 2)
    val_gen = torch.Generator().manual_seed(cfg.seed + 500_009)
    test_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    sample_gen = torch.Generator().manual_seed(cfg.seed + 7)
    per_shot: dict[str, dict[str, Any]] = {}
    for k in cfg.eval_shots:
        # MAML's noise level: the MLE on validation tasks with this support size.
        val = _batch(cfg, val_gen, cfg.eval_tasks, k, cfg.eval_points)
        with torch.no_grad():
            adapted = maml.adapt_tasks(m_params, val.support)
            pred = torch.func.vmap(mlp)(adapted, val.query[0])
        sigma = float((pred - val.query[1]).square().mean().sqrt())

        test = _batch(cfg, test_gen, cfg.eval_tasks, k, cfg.eval_points)
        x_q, y_q = test.query
        with torch.no_grad():
            adapted = maml.adapt_tasks(m_params, test.support)
            pred = torch.func.vmap(mlp)(adapted, x_q)
            m_ll = gaussian_log_lik(pred, y_q, torch.tensor(math.log(sigma)))
            m_cover = ((y_q - pred).abs() <= z * sigma).float()
            m_mse = (pred - y_q).square().mean()

        # Probabilistic: mixture of S Gaussians per point; interval from sampled y.
        lls, covers, widths, mses = [], [], [], []
        for i in range(cfg.eval_tasks):
            sup = (test.support[0][i], test.support[1][i])
            f = learner.predict(meta, sup, x_q[i], cfg.eval_samples, sample_gen)  # [S, Q, 1]
            ll = gaussian_log_lik(f, y_q[i], meta.log_noise)  # [S, Q, 1]
            lls.append(torch.logsumexp(ll, 0) - math.log(cfg.eval_samples))
            noise = torch.exp(meta.log_noise)
            ys = (
                f.unsqueeze(1)
                + noise * torch.randn(f.shape[0], 20, *f.shape[1:], generator=sample_gen)
            ).flatten(0, 1)
            lo = torch.quantile(ys, 0.5 - cfg.interval / 2, dim=0)
            hi = torch.quantile(ys, 0.5 + cfg.interval / 2, dim=0)
            covers.append(((y_q[i] >= lo) & (y_q[i] <= hi)).float())
            widths.append(hi - lo)
            mses.append((f.mean(0) - y_q[i]).square().mean())
        p_ll = torch.stack(lls)
        p_cover = torch.stack(covers)
        per_shot[str(k)] = {
            "log_likelihood": round(float(p_ll.mean()), 4),
            "maml_log_likelihood": round(float(m_ll.mean()), 4),
            "coverage": round(float(p_cover.mean()), 4),
            "maml_coverage": round(float(m_cover.mean()), 4),
            "interval_width": round(float(torch.stack(widths).mean()), 3),
            "maml_interval_width": round(2 * z * sigma, 3),
            "mse_of_mean": round(float(torch.stack(mses).mean()), 4),
            "maml_mse": round(float(m_mse), 4),
            "maml_noise_sigma_fit_on_validation": round(sigma, 4),
        }

    def avg(key: str) -> float:
        return round(sum(per_shot[str(k)][key] for k in cfg.eval_shots) / len(cfg.eval_shots), 4)

    value, base = avg("log_likelihood"), avg("maml_log_likelihood")
    cov_err = round(
        sum(abs(per_shot[str(k)]["coverage"] - cfg.interval) for k in cfg.eval_shots)
        / len(cfg.eval_shots),
        4,
    )
    m_cov_err = round(
        sum(abs(per_shot[str(k)]["maml_coverage"] - cfg.interval) for k in cfg.eval_shots)
        / len(cfg.eval_shots),
        4,
    )
    return {
        "metric": "held-out predictive log-likelihood per point, ambiguous sine-or-line regression, "
        f"mean over {list(cfg.eval_shots)}-shot",
        "value": value,
        "baseline": "MAML (same network, inner step and iterations) with a Gaussian likelihood "
        "whose noise level is fit on validation tasks (per shot count)",
        "baseline_value": base,
        "beats_baseline": bool(value > base),
        "coverage_target": cfg.interval,
        "coverage_abs_error": cov_err,
        "maml_coverage_abs_error": m_cov_err,
        "better_calibrated": bool(cov_err < m_cov_err),
        "by_shot": per_shot,
        "learned_noise_std": round(float(torch.exp(meta.log_noise)), 4),
        "learned_gamma": round(float(meta.gamma), 5),
        "mean_prior_std": round(
            float(torch.cat([torch.exp(v).flatten() for v in meta.log_std.values()]).mean()), 4
        ),
        "train_seconds": {"probabilistic": round(p_seconds, 1), "maml": round(m_seconds, 1)},
        "final_train_loss": round(sum(p_curve[-50:]) / max(len(p_curve[-50:]), 1), 4),
        "setup": {**asdict(cfg), "learner": asdict(pcfg)},
        "seconds": round(time.perf_counter() - start, 1),
    }
