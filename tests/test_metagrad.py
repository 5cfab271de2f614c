"""Meta-gradient RL (meta/metagrad.py): differentiable GAE, the meta-gradient w.r.t. gamma and
lambda, the PPO loop on the in-process plaza and its TensorBoard log."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_meta.envs.inprocess import PlazaEnvConfig, PlazaTaskEnv
from avatar_meta.meta import metagrad as mg
from avatar_meta.rl.gae import gae
from avatar_meta.rl.policy import Policy, PolicySpec
from avatar_meta.tasks import make_task

SPEC = PolicySpec(obs_size=3, hidden=(8,), num_continuous=1, discrete_branches=(2,))
POLICY = Policy(SPEC)


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Small ops: one thread is fastest and robust when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _episodes(gen: torch.Generator, b: int = 4, t: int = 12) -> tuple[torch.Tensor, ...]:
    rewards = torch.randn(b, t, generator=gen, dtype=torch.float64)
    values = torch.randn(b, t, generator=gen, dtype=torch.float64)
    dones = torch.rand(b, t, generator=gen) < 0.2
    dones[:, -1] = True
    interrupted = dones & (torch.rand(b, t, generator=gen) < 0.5)
    terminal = torch.where(interrupted, torch.randn(b, t, generator=gen, dtype=torch.float64), 0)
    last = torch.randn(b, generator=gen, dtype=torch.float64)
    return rewards, values, dones, last, interrupted, terminal


def test_gae_with_tensor_gamma_lambda_equals_float_gae() -> None:
    gen = torch.Generator().manual_seed(0)
    for gamma, lam in ((0.99, 0.95), (0.5, 0.0), (0.9, 1.0)):
        args = _episodes(gen)
        ref_adv, ref_ret = gae(*args, gamma=gamma, lam=lam)
        adv, ret = gae(
            *args,
            gamma=torch.tensor(gamma, dtype=torch.float64),
            lam=torch.tensor(lam, dtype=torch.float64),
        )
        torch.testing.assert_close(adv, ref_adv, rtol=0, atol=1e-12)
        torch.testing.assert_close(ret, ref_ret, rtol=0, atol=1e-12)


def test_gae_gradient_wrt_gamma_lambda_matches_finite_differences() -> None:
    args = _episodes(torch.Generator().manual_seed(1))
    w = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def f(gl: torch.Tensor) -> torch.Tensor:
        adv, ret = gae(*args, gamma=gl[0], lam=gl[1])
        return (w * adv).sum() + (w * ret).square().sum()

    x = torch.tensor([0.8, 0.6], dtype=torch.float64)
    assert torch.autograd.gradcheck(f, (x.requires_grad_(True),))


def _traj(gen: torch.Generator, e: int = 6, t: int = 8) -> mg.TrajBatch:
    """A synthetic time-ordered batch for the small float64 policy (two short episodes per row
    at most, some interrupted, the last row padded)."""
    params, buffers = POLICY.init(seed=3, dtype=torch.float64)
    obs = torch.randn(e, t, 3, generator=gen, dtype=torch.float64)
    mask = torch.zeros(e, t, 2, dtype=torch.bool)
    act = POLICY.act(params, buffers, obs.reshape(-1, 3), mask.reshape(-1, 2), generator=gen)
    done = torch.zeros(e, t, dtype=torch.bool)
    done[:, -1] = True
    done[::2, t // 2] = True
    interrupted = done.clone()
    interrupted[1::2, -1] = False
    weight = torch.ones(e, t, dtype=torch.float64)
    weight[-1, t - 2 :] = 0.0
    reward = torch.randn(e, t, generator=gen, dtype=torch.float64) * weight
    value = 0.5 * torch.randn(e, t, generator=gen, dtype=torch.float64) * weight
    return mg.TrajBatch(
        obs=obs,
        mask=mask,
        cont_action=act.cont_action.reshape(e, t, 1),
        gesture=act.gesture.reshape(e, t, 1),
        old_log_prob=act.log_prob.reshape(e, t),
        reward=reward,
        value=value,
        done=done,
        interrupted=interrupted,
        terminal_value=torch.where(interrupted, 0.3, 0.0).to(torch.float64),
        weight=weight,
    )


def _setup() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], mg.TrajBatch, mg.TrajBatch]:
    params, buffers = POLICY.init(seed=4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    return params, buffers, _traj(gen), _traj(gen)


def test_meta_objective_gradient_wrt_gamma_lambda_matches_finite_differences() -> None:
    params, buffers, upd, ev = _setup()
    cfg = mg.MetaGradConfig(inner_lr=0.5, ref_gamma=0.99, ref_lam=1.0)
    eta = mg.init_eta(0.7, 0.4).double()

    def objective(e: torch.Tensor) -> torch.Tensor:
        return mg.metagrad_objective(e, params, upd, ev, policy=POLICY, buffers=buffers, cfg=cfg)

    grad = torch.func.grad(objective)(eta)
    assert grad.abs().min() > 1e-6  # both meta-parameters matter
    eps = 1e-5
    for i in range(2):
        d = torch.zeros(2, dtype=torch.float64)
        d[i] = eps
        fd = (objective(eta + d) - objective(eta - d)) / (2 * eps)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_online_meta_gradient_equals_exact_one_step_gradient() -> None:
    params, buffers, upd, ev = _setup()
    cfg = mg.MetaGradConfig(inner_lr=0.5)
    eta = mg.init_eta(0.7, 0.4).double()
    exact = torch.func.grad(
        lambda e: mg.metagrad_objective(e, params, upd, ev, policy=POLICY, buffers=buffers, cfg=cfg)
    )(eta)
    inner = mg.make_inner_loss(POLICY, buffers, eta)
    g = torch.func.grad(inner)(params, upd)
    after = {k: v - cfg.inner_lr * g[k] if k.startswith("actor.") else v for k, v in params.items()}
    online, _ = mg.meta_gradient(
        eta, params, upd, after, ev,
        policy=POLICY, buffers_before=buffers, buffers_after=buffers, cfg=cfg,
    )  # fmt: skip
    torch.testing.assert_close(online, exact, rtol=1e-9, atol=1e-12)
    # switching a meta-parameter off zeroes its component only
    only_lam, _ = mg.meta_gradient(
        eta, params, upd, after, ev,
        policy=POLICY, buffers_before=buffers, buffers_after=buffers,
        cfg=replace(cfg, learn_gamma=False),
    )  # fmt: skip
    assert float(only_lam[0]) == 0.0 and float(only_lam[1]) == pytest.approx(float(exact[1]))


def test_learned_gamma_lambda_compose_with_maml_inner_loop() -> None:
    """MAML with the meta-gradient's inner loss: the MAML meta-loss reaches eta (vmapped over
    tasks), and its gradient matches finite differences."""
    from avatar_meta.meta.core import TaskBatch, stack_tasks
    from avatar_meta.meta.maml import MAML, MAMLConfig

    params, buffers = POLICY.init(seed=4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    tasks = TaskBatch(stack_tasks([_traj(gen), _traj(gen)]), stack_tasks([_traj(gen), _traj(gen)]))

    def outer(p: dict[str, torch.Tensor], b: mg.TrajBatch) -> torch.Tensor:
        return mg.metagrad_pg_loss(p, b, (0.99, 1.0), policy=POLICY, buffers=buffers)

    def meta_loss(eta: torch.Tensor, use_vmap: bool) -> torch.Tensor:
        inner = mg.make_inner_loss(POLICY, buffers, eta)
        cfg = MAMLConfig(inner_lr=0.5, adapt_prefix="actor.", use_vmap=use_vmap)
        return MAML(inner, outer, cfg).meta_loss(params, tasks)

    eta = mg.init_eta(0.7, 0.4).double().requires_grad_(True)
    meta_loss(eta, True).backward()
    assert eta.grad is not None and float(eta.grad.abs().min()) > 1e-6
    base = eta.detach()
    eps = 1e-5
    for i in range(2):
        d = torch.zeros(2, dtype=torch.float64)
        d[i] = eps
        fd = (meta_loss(base + d, False) - meta_loss(base - d, False)) / (2 * eps)
        assert float(eta.grad[i]) == pytest.approx(float(fd), rel=1e-4, abs=1e-10)


def test_meta_gradient_pulls_a_myopic_discount_towards_the_reference() -> None:
    """Delayed reward: each episode's only reward comes at its end and equals the sum of the
    earlier forward commands. The reference objective (gamma 0.99, lambda 1) credits every
    action; a myopic gamma credits only the last ones, so its update helps the reference
    objective less and the meta-gradient must raise gamma (and lambda)."""
    gen = torch.Generator().manual_seed(6)
    params, buffers = POLICY.init(seed=7, dtype=torch.float64)
    e, t = 64, 10

    def batch(p: dict[str, torch.Tensor]) -> mg.TrajBatch:
        obs = torch.randn(e, t, 3, generator=gen, dtype=torch.float64)
        mask = torch.zeros(e, t, 2, dtype=torch.bool)
        act = POLICY.act(p, buffers, obs.reshape(-1, 3), mask.reshape(-1, 2), generator=gen)
        cont = act.cont_action.reshape(e, t, 1)
        reward = torch.zeros(e, t, dtype=torch.float64)
        reward[:, -1] = cont[..., 0].sum(-1)
        done = torch.zeros(e, t, dtype=torch.bool)
        done[:, -1] = True
        return mg.TrajBatch(
            obs, mask, cont, act.gesture.reshape(e, t, 1), act.log_prob.reshape(e, t),
            reward, torch.zeros(e, t, dtype=torch.float64), done, torch.zeros_like(done),
            torch.zeros(e, t, dtype=torch.float64), torch.ones(e, t, dtype=torch.float64),
        )  # fmt: skip

    cfg = mg.MetaGradConfig(gamma_init=0.3, lam_init=0.3, meta_lr=0.2, inner_lr=0.1)
    state = mg.MetaGradState(cfg)
    state.eta.data = state.eta.data.double()
    state.opt = torch.optim.Adam([state.eta], lr=cfg.meta_lr)
    prev = batch(params)
    for _ in range(10):
        inner = mg.make_inner_loss(POLICY, buffers, state.eta.detach())
        g = torch.func.grad(inner)(params, prev)
        after = {k: v - cfg.inner_lr * g[k] for k, v in params.items()}
        nxt = batch(after)
        grad, _ = mg.meta_gradient(
            state.eta, params, prev, after, nxt,
            policy=POLICY, buffers_before=buffers, buffers_after=buffers, cfg=cfg,
        )  # fmt: skip
        state.step(grad)
        params, prev = after, nxt
    assert state.gamma > 0.6
    assert state.lam > 0.4


def _short_run(seed: int, log_dir: str | None = None) -> mg.MetaGradHistory:
    cfg = mg.MetaGradPPOConfig(
        meta=mg.MetaGradConfig(gamma_init=0.6, lam_init=0.3),
        iterations=3,
        episodes_per_iter=1,
        ppo_epochs=1,
        ppo_minibatches=2,
        hidden=(16,),
        eval_episodes=1,
        seed=seed,
    )
    env = PlazaTaskEnv(PlazaEnvConfig(num_areas=1, seed=seed))
    return mg.train_ppo_metagrad(env, [make_task("reach_landmark", {"landmark": 0})], cfg, log_dir)


def test_ppo_loop_is_deterministic_under_a_seed_and_logs_to_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    a = _short_run(0, str(tmp_path / "tb"))
    b = _short_run(0)
    assert a.gamma == b.gamma and a.lam == b.lam
    assert a.train_return == b.train_return and a.eval_return == b.eval_return
    assert a.gamma[0] == pytest.approx(0.6) and a.gamma[1] != a.gamma[0]  # it learns online
    assert a.env_steps == [200, 400, 600]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"metagrad/gamma", "metagrad/lambda", "metagrad/return"} <= tags
    logged = [round(s.value, 5) for s in acc.Scalars("metagrad/gamma")]
    assert logged == [round(g, 5) for g in a.gamma]


def test_fixed_baseline_keeps_gamma_lambda() -> None:
    cfg = mg.MetaGradPPOConfig(
        meta=mg.MetaGradConfig(gamma_init=0.6, lam_init=0.3, meta_lr=0.0),
        iterations=2,
        episodes_per_iter=1,
        ppo_epochs=1,
        hidden=(8,),
        eval_episodes=1,
    )
    env = PlazaTaskEnv(PlazaEnvConfig(num_areas=1, seed=0))
    h = mg.train_ppo_metagrad(env, [make_task("reach_landmark")], cfg)
    assert h.gamma == pytest.approx([0.6, 0.6]) and h.lam == pytest.approx([0.3, 0.3])
    assert h.meta_loss == []


@pytest.mark.slow
def test_bench_reports_a_comparison_and_moves_gamma_lambda() -> None:
    from avatar_meta.benchmarks import metagrad_bench

    out = metagrad_bench.bench(quick=True, seeds=(0,), iterations=12)
    for key in ("metric", "value", "baseline", "baseline_value", "beats_baseline"):
        assert key in out
    assert out["env_steps_per_run"] > 0
    assert len(out["gamma_trajectory_seed0"]) == len(out["lambda_trajectory_seed0"])
    # the meta-gradient moved gamma/lambda away from their poor start
    moved = abs(out["final_gamma"][0] - 0.6) + abs(out["final_lambda"][0] - 0.3)
    assert moved > 0.02


def test_delayed_reward_env_keeps_returns_and_pays_every_delay_steps() -> None:
    """Same actions, same world: the delayed env pays exactly the summed rewards, only at
    every 5th decision and at episode ends, so episode returns are unchanged."""
    from avatar_meta.benchmarks.metagrad_bench import DelayedRewardEnv

    task = make_task("reach_landmark", {"landmark": 1})
    plain = PlazaTaskEnv(PlazaEnvConfig(num_areas=2, seed=3))
    delayed = DelayedRewardEnv(PlazaTaskEnv(PlazaEnvConfig(num_areas=2, seed=3)), 5)
    rng = np.random.default_rng(0)
    for env in (plain, delayed):
        env.set_tasks([task, task])
        env.reset()
    got, want, dones = [], [], []
    for _ in range(420):  # two episodes of 200 decisions and part of a third
        cont = rng.uniform(-1, 1, size=(2, 2)).astype(np.float32)
        gesture = np.zeros(2, np.int64)
        a, b = plain.step(cont, gesture), delayed.step(cont, gesture)
        np.testing.assert_array_equal(a.obs, b.obs)
        want.append(a.reward)
        got.append(b.reward)
        dones.append(a.done)
    want_arr, got_arr, done_arr = np.array(want), np.array(got), np.array(dones)
    ends = np.flatnonzero(done_arr[:, 0])
    assert len(ends) == 2
    start = 0
    for end in ends:  # per episode: the same return
        np.testing.assert_allclose(
            got_arr[start : end + 1].sum(0), want_arr[start : end + 1].sum(0), rtol=1e-5
        )
        start = end + 1
    paid = np.flatnonzero(got_arr[: ends[0] + 1, 0] != 0)
    assert set((paid + 1) % 5) == {0}  # payouts only on every 5th decision of the episode
    with pytest.raises(ValueError, match="delay must be >= 1"):
        DelayedRewardEnv(plain, 0)
