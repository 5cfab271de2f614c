"""Probabilistic MAML (meta/probabilistic.py): shapes, the reduction to MAML, gradients
against finite differences, determinism and a small calibration test."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from avatar_meta.meta.core import Params, TaskBatch
from avatar_meta.meta.maml import MAML, MAMLConfig
from avatar_meta.meta.probabilistic import (
    ProbabilisticConfig,
    ProbabilisticMAML,
    ProbParams,
    draw_eps,
    fit,
    gaussian_log_lik,
    posterior_samples,
)
from avatar_meta.meta.sinusoid import init_mlp, mlp, mse_loss


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tasks(
    n: int, k: int, q: int, gen: torch.Generator, dtype: torch.dtype = torch.float32
) -> TaskBatch:
    a = torch.empty(n, 1, 1, dtype=dtype).uniform_(0.5, 2, generator=gen)

    def pts(m: int) -> tuple[Tensor, Tensor]:
        x = torch.empty(n, m, 1, dtype=dtype).uniform_(-3, 3, generator=gen)
        return x, a * torch.sin(x)

    return TaskBatch(pts(k), pts(q))


def test_shapes_of_samples_predictions_and_exploration() -> None:
    learner = ProbabilisticMAML(mlp, mse_loss, ProbabilisticConfig(samples=4))
    meta = learner.init(init_mlp((8, 8), 0))
    gen = torch.Generator().manual_seed(0)
    eps = draw_eps(meta, 4, gen)
    assert eps["0.weight"].shape == (4, 8, 1)
    assert draw_eps(meta, 4, gen, tasks=3)["1.weight"].shape == (3, 4, 8, 8)
    tasks = _tasks(3, 5, 7, gen)
    support = (tasks.support[0][0], tasks.support[1][0])
    phis = posterior_samples(meta, support, eps, inner_loss=mse_loss, cfg=learner.config)
    assert phis["2.weight"].shape == (4, 1, 8)
    prior = learner.sample_params(meta, 6, gen)  # exploration before any data
    assert prior["0.bias"].shape == (6, 8)
    hyps = learner.sample_params(meta, 6, gen, support=support)
    assert hyps["0.bias"].shape == (6, 8)
    assert learner.predict(meta, support, torch.zeros(9, 1), 6, gen).shape == (6, 9, 1)
    assert learner.adapt(meta, support)["0.weight"].shape == (8, 1)
    assert learner.meta_loss(meta, tasks).shape == ()
    # Different prior draws are different functions (the prior is a distribution).
    f = torch.func.vmap(mlp, in_dims=(0, None))(prior, torch.linspace(-3, 3, 5)[:, None])
    assert float(f.std(0).mean()) > 0


def test_a_collapsed_prior_without_mean_shift_is_maml() -> None:
    """sigma -> 0 and gamma unused: every sample is MAML's adapted parameters."""
    cfg = ProbabilisticConfig(inner_lr=0.05, inner_steps=2, mean_shift=False, min_log_std=-60.0)
    learner = ProbabilisticMAML(mlp, mse_loss, cfg)
    params = init_mlp((8, 8), 1)
    meta = learner.init(params)
    meta = meta._replace(log_std={k: torch.full_like(v, -50.0) for k, v in meta.log_std.items()})
    gen = torch.Generator().manual_seed(1)
    tasks = _tasks(1, 5, 5, gen)
    support = (tasks.support[0][0], tasks.support[1][0])
    phis = posterior_samples(meta, support, draw_eps(meta, 3, gen), inner_loss=mse_loss, cfg=cfg)
    maml = MAML(mse_loss, mse_loss, MAMLConfig(inner_lr=0.05, inner_lr_decay=1.0, inner_steps=2))
    ref = maml.adapt(params, support)
    for k in ref:
        for s in range(3):
            assert torch.allclose(phis[k][s], ref[k], atol=1e-6), k


def test_max_gamma_bounds_the_mean_shift() -> None:
    """A runaway gamma is clamped to [0, max_gamma] in the mean shift: with gamma = 5 and
    max_gamma = 0.02 the samples equal those of gamma = 0.02 unclamped; with gamma = -1 they
    equal no shift at all."""
    base = ProbabilisticConfig(inner_lr=0.05)
    learner = ProbabilisticMAML(mlp, mse_loss, base)
    meta = learner.init(init_mlp((8, 8), 3))
    gen = torch.Generator().manual_seed(3)
    tasks = _tasks(1, 5, 5, gen)
    support = (tasks.support[0][0], tasks.support[1][0])
    eps = draw_eps(meta, 2, gen)

    def samples(gamma: float, cfg: ProbabilisticConfig) -> Params:
        m = meta._replace(gamma=torch.tensor(gamma))
        return posterior_samples(m, support, eps, inner_loss=mse_loss, cfg=cfg)

    bounded = replace(base, max_gamma=0.02)
    for k, v in samples(0.02, base).items():
        assert torch.allclose(samples(5.0, bounded)[k], v), k
    for k, v in samples(0.0, base).items():
        assert torch.allclose(samples(-1.0, bounded)[k], v), k
    # Unbounded, gamma = 5 really is a different (much larger) shift.
    assert not torch.allclose(samples(5.0, base)["2.weight"], samples(0.02, base)["2.weight"])


def _perturb(meta: ProbParams, which: str, key: str | None, idx: int, d: float) -> ProbParams:
    if which in ("log_noise", "gamma"):
        return meta._replace(**{which: getattr(meta, which) + d})
    assert key is not None
    group: Params = dict(getattr(meta, which))
    flat = group[key].flatten().clone()
    flat[idx] += d
    group[key] = flat.reshape(group[key].shape)
    return meta._replace(**{which: group})


@pytest.mark.parametrize("joint", [False, True])
def test_meta_gradient_matches_finite_differences_and_loop_matches_vmap(joint: bool) -> None:
    cfg = ProbabilisticConfig(samples=3, inner_lr=0.05, init_log_std=-1.0, joint=joint)
    learner = ProbabilisticMAML(mlp, mse_loss, cfg)
    meta = learner.init({k: v.double() for k, v in init_mlp((6, 6), 2).items()})
    meta = meta._replace(log_noise=meta.log_noise.double(), gamma=meta.gamma.double())
    gen = torch.Generator().manual_seed(2)
    tasks = _tasks(2, 4, 6, gen, torch.float64)
    eps = {k: v.double() for k, v in draw_eps(meta, 3, gen, tasks=2).items()}
    grads, loss = learner.meta_grad(meta, tasks, eps)
    looped = ProbabilisticMAML(mlp, mse_loss, replace(cfg, use_vmap=False))
    assert torch.allclose(looped.meta_loss(meta, tasks, eps), loss, atol=1e-12)
    h = 1e-6
    checks: list[tuple[str, str | None, int]] = [
        ("log_noise", None, 0),
        ("gamma", None, 0),
        ("mean", "0.weight", 3),
        ("mean", "2.bias", 0),
        ("log_std", "1.weight", 7),
        ("log_std", "2.weight", 1),
    ]
    for which, key, idx in checks:
        up = learner.meta_loss(_perturb(meta, which, key, idx, h), tasks, eps)
        down = learner.meta_loss(_perturb(meta, which, key, idx, -h), tasks, eps)
        fd = (up - down) / (2 * h)
        g = getattr(grads, which)
        g = g if key is None else g[key].flatten()[idx]
        assert torch.isclose(g, fd, rtol=1e-5, atol=1e-8), (which, key, float(g), float(fd))


def test_same_seed_same_samples_and_same_training_run() -> None:
    learner = ProbabilisticMAML(mlp, mse_loss, ProbabilisticConfig(samples=3))
    meta = learner.init(init_mlp((8, 8), 3))
    a = learner.sample_params(meta, 4, torch.Generator().manual_seed(7))
    b = learner.sample_params(meta, 4, torch.Generator().manual_seed(7))
    c = learner.sample_params(meta, 4, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)

    def run() -> tuple[ProbParams, list[float]]:
        gen = torch.Generator().manual_seed(5)
        return fit(learner, meta, lambda: _tasks(4, 3, 5, gen), 4, gen, lr=1e-2)

    (m1, l1), (m2, l2) = run(), run()
    assert l1 == l2
    assert torch.equal(m1.log_noise, m2.log_noise)
    assert all(torch.equal(m1.mean[k], m2.mean[k]) for k in m1.mean)


def _linear(params: Params, x: Tensor) -> Tensor:
    return x * params["w"] + params["b"]


def _linear_mse(params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return (_linear(params, x) - y).square().mean()


def _slope_tasks(n: int, q: int, gen: torch.Generator) -> TaskBatch:
    """y = a x + 0.1 noise with a ~ N(0, 1); the one support point sits at x = 0, so it
    says nothing about the slope: the right predictive spread grows with |x|."""
    a = torch.randn(n, 1, 1, generator=gen)
    xs = torch.zeros(n, 1, 1)
    xq = torch.empty(n, q, 1).uniform_(-2, 2, generator=gen)

    def y(x: Tensor) -> Tensor:
        return a * x + 0.1 * torch.randn(x.shape, generator=gen)

    return TaskBatch((xs, y(xs)), (xq, y(xq)))


def test_learns_input_dependent_uncertainty_that_beats_a_fitted_gaussian() -> None:
    """On ambiguous slope tasks the learned prior over w must give a higher held-out
    log-likelihood than MAML with its Gaussian noise fit on validation tasks (a single
    sigma cannot follow the spread |x|), and a 90% interval with coverage near 0.9.
    Analytically: best homoscedastic ~ -1.57 nats, best input-dependent ~ -1.11; seed 0
    reached -1.39 vs -1.58 with 8 training samples (the learned noise absorbs some slack)."""
    init = {"w": torch.zeros(1, 1), "b": torch.zeros(1)}
    # The joint objective: a linear model fits these tasks, so one sample can explain a whole
    # query set (the pointwise form reached sigma_w ~0.7 and noise ~0.7 in 300 iterations).
    cfg = ProbabilisticConfig(samples=8, inner_lr=0.1, init_log_std=-2.0, joint=True)
    learner = ProbabilisticMAML(_linear, _linear_mse, cfg)
    gen = torch.Generator().manual_seed(0)
    meta, _ = fit(learner, learner.init(init), lambda: _slope_tasks(16, 10, gen), 300, gen, lr=1e-2)
    maml = MAML(
        _linear_mse, _linear_mse, MAMLConfig(inner_lr=0.1, inner_lr_decay=1.0), forward=_linear
    )
    from avatar_meta.meta.hypernet import fit as fit_dict

    gen_m = torch.Generator().manual_seed(0)
    m_params, _ = fit_dict(maml.meta_grad, init, lambda: _slope_tasks(16, 10, gen_m), 300, lr=1e-2)
    val = _slope_tasks(100, 20, torch.Generator().manual_seed(50))
    test = _slope_tasks(100, 20, torch.Generator().manual_seed(51))
    with torch.no_grad():
        pred = torch.func.vmap(_linear)(maml.adapt_tasks(m_params, val.support), val.query[0])
        sigma = float((pred - val.query[1]).square().mean().sqrt())
        pred = torch.func.vmap(_linear)(maml.adapt_tasks(m_params, test.support), test.query[0])
        maml_ll = float(gaussian_log_lik(pred, test.query[1], torch.tensor(math.log(sigma))).mean())
    lls, covered = [], []
    sample_gen = torch.Generator().manual_seed(9)
    for i in range(100):
        sup = (test.support[0][i], test.support[1][i])
        x, y = test.query[0][i], test.query[1][i]
        f = learner.predict(meta, sup, x, 64, sample_gen)
        lls.append(torch.logsumexp(gaussian_log_lik(f, y, meta.log_noise), 0) - math.log(64))
        ys = f + torch.exp(meta.log_noise) * torch.randn(f.shape, generator=sample_gen)
        lo, hi = torch.quantile(ys, 0.05, dim=0), torch.quantile(ys, 0.95, dim=0)
        covered.append(((y >= lo) & (y <= hi)).float())
    prob_ll = float(torch.stack(lls).mean())
    coverage = float(torch.stack(covered).mean())
    assert prob_ll > maml_ll + 0.1, (prob_ll, maml_ll)
    # The learned noise is a little wide for 64 evaluation samples (it was trained with
    # 8): seed 0 covers ~0.95, above the nominal 0.9 (conservative, not overconfident).
    assert 0.85 < coverage < 0.97, coverage
    # The prior learned the slope's spread (a ~ N(0, 1)), not just a noise level.
    assert 0.6 < float(torch.exp(meta.log_std["w"]).squeeze()) < 1.5


def test_mixture_noise_calibration_is_the_maximum_likelihood_on_the_grid() -> None:
    """With identical samples the mixture is one Gaussian, whose maximum-likelihood sigma is
    the RMSE: the calibration must pick the grid point nearest to it (in log space). With
    spread-out samples the mixture needs less noise than that single Gaussian."""
    from avatar_meta.benchmarks.probabilistic_bench import NOISE_GRID, calibrate_noise

    gen = torch.Generator().manual_seed(0)
    targets = [torch.randn(30, 1, generator=gen) * 0.7 for _ in range(20)]
    same = [torch.zeros(4, 30, 1) for _ in targets]
    rmse = float(torch.cat(targets).square().mean().sqrt())
    nearest = float(NOISE_GRID[(NOISE_GRID - math.log(rmse)).abs().argmin()])
    assert calibrate_noise(same, targets) == pytest.approx(nearest)
    spread = [torch.randn(64, 30, 1, generator=gen) * 0.6 for _ in targets]
    assert calibrate_noise(spread, targets) < nearest
