"""The model-based learner (meta/hypernet.py): shapes, invariances, gradients, determinism
and a small learning test."""

from __future__ import annotations

import pytest
import torch

from avatar_meta import contract
from avatar_meta.meta.core import TaskBatch, map_tasks
from avatar_meta.meta.hypernet import (
    Context,
    Hypernet,
    HypernetConfig,
    bc_loss,
    encode_context,
    fit,
    make_context,
    policy_forward,
    policy_params_for_maml,
    split_context,
)

SMALL = HypernetConfig(
    obs_dim=3, act_dim=2, trunk=(8, 8), encoder=(8,), embed_dim=4, hyper_hidden=8
)


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _context(
    cfg: HypernetConfig, k: int, gen: torch.Generator, lead: tuple[int, ...] = ()
) -> Context:
    o, a = cfg.obs_dim, cfg.act_dim
    return make_context(
        torch.randn(*lead, k, o, generator=gen),
        torch.randn(*lead, k, a, generator=gen),
        torch.randn(*lead, k, generator=gen),
        torch.randn(*lead, k, o, generator=gen),
    )


def _tasks(cfg: HypernetConfig, n: int, k: int, q: int, gen: torch.Generator) -> TaskBatch:
    ctx = _context(cfg, k, gen, (n,))
    query = (
        torch.randn(n, q, cfg.obs_dim, generator=gen),
        torch.randn(n, q, cfg.act_dim, generator=gen),
        torch.ones(n, q),
    )
    return TaskBatch(ctx, query)


def test_shapes_of_embedding_emitted_policy_and_batched_adaptation() -> None:
    gen = torch.Generator().manual_seed(0)
    hyper = Hypernet(SMALL)
    params = hyper.init(0)
    ctx = _context(SMALL, 5, gen)
    assert ctx.rows.shape == (5, SMALL.transition_dim) == (5, 2 * 3 + 2 + 1)
    assert encode_context(params, ctx, SMALL).shape == (4,)
    policy = hyper.adapt(params, ctx)
    assert policy["policy.0.weight"].shape == (8, 3)
    assert policy["policy.1.weight"].shape == (8, 8)
    assert policy["policy.2.weight"].shape == (2, 8) and policy["policy.2.bias"].shape == (2,)
    # The emitted policy has exactly the layout of the plain MLP MAML adapts.
    maml_policy = policy_params_for_maml(SMALL, 0)
    assert {k: v.shape for k, v in policy.items()} == {k: v.shape for k, v in maml_policy.items()}
    assert policy_forward(policy, torch.zeros(7, 3)).shape == (7, 2)
    stacked = hyper.adapt_tasks(params, _context(SMALL, 5, gen, (6,)))
    assert stacked["policy.2.weight"].shape == (6, 2, 8)
    obs, act, w = split_context(ctx, SMALL)
    assert obs.shape == (5, 3) and act.shape == (5, 2) and w.shape == (5,)
    learner = hyper.clone(params).adapt(ctx)
    assert torch.allclose(learner(torch.ones(2, 3)), policy_forward(policy, torch.ones(2, 3)))
    with pytest.raises(ValueError):
        hyper.adapt(params, ctx, steps=3)


def test_embedding_is_permutation_invariant_and_ignores_zero_weight_rows() -> None:
    gen = torch.Generator().manual_seed(1)
    params = Hypernet(SMALL).init(1)
    ctx = _context(SMALL, 6, gen)
    z = encode_context(params, ctx, SMALL)
    perm = torch.randperm(6, generator=gen)
    assert torch.allclose(
        encode_context(params, Context(ctx.rows[perm], ctx.weights[perm]), SMALL), z, atol=1e-6
    )
    padded = Context(
        torch.cat([ctx.rows, 100 * torch.randn(3, ctx.rows.shape[1], generator=gen)]),
        torch.cat([ctx.weights, torch.zeros(3)]),
    )
    assert torch.allclose(encode_context(params, padded, SMALL), z, atol=1e-6)
    # Mean pooling: repeating the context does not move the embedding.
    doubled = Context(ctx.rows.repeat(2, 1), ctx.weights.repeat(2))
    assert torch.allclose(encode_context(params, doubled, SMALL), z, atol=1e-6)
    # Without rewards, the encoder ignores the reward and next-obs columns.
    no_r = HypernetConfig(**{**SMALL.__dict__, "use_reward": False})
    changed = ctx.rows.clone()
    changed[:, 5:] += 1.0
    assert torch.allclose(
        encode_context(params, Context(changed, ctx.weights), no_r),
        encode_context(params, ctx, no_r),
    )


def test_meta_gradient_matches_finite_differences_and_loop_matches_vmap() -> None:
    gen = torch.Generator().manual_seed(2)
    hyper = Hypernet(SMALL)
    params = {k: v.double() for k, v in hyper.init(2).items()}
    # Let the hypernet's output matter (its last layer starts small).
    params["hyper.1.weight"] = params["hyper.1.weight"] * 20
    tasks = _tasks(SMALL, 3, 5, 7, gen)
    tasks = TaskBatch(
        Context(tasks.support.rows.double(), tasks.support.weights.double()),
        tuple(t.double() for t in tasks.query),
    )
    grads, loss = hyper.meta_grad(params, tasks)
    looped = Hypernet(HypernetConfig(**{**SMALL.__dict__, "use_vmap": False}))
    assert torch.allclose(looped.meta_loss(params, tasks), loss, atol=1e-12)
    eps = 1e-6
    for key in (
        "enc.0.weight",
        "enc.1.bias",
        "hyper.0.weight",
        "hyper.1.weight",
        "trunk.0.weight",
        "head.bias",
    ):
        flat = params[key].flatten()
        for idx in (0, flat.numel() - 1):
            up, down = dict(params), dict(params)
            d = torch.zeros_like(flat)
            d[idx] = eps
            up[key] = (flat + d).reshape(params[key].shape)
            down[key] = (flat - d).reshape(params[key].shape)
            fd = (hyper.meta_loss(up, tasks) - hyper.meta_loss(down, tasks)) / (2 * eps)
            assert torch.isclose(grads[key].flatten()[idx], fd, rtol=1e-5, atol=1e-8), (key, idx)


def test_same_seed_same_params_and_same_training_run() -> None:
    hyper = Hypernet(SMALL)
    a, b, c = hyper.init(3), hyper.init(3), hyper.init(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)

    def run() -> tuple[dict[str, torch.Tensor], list[float]]:
        gen = torch.Generator().manual_seed(5)
        return fit(hyper.meta_grad, hyper.init(3), lambda: _tasks(SMALL, 4, 5, 6, gen), 5, lr=1e-2)

    (p1, l1), (p2, l2) = run(), run()
    assert l1 == l2
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def _goal_tasks(n: int, k: int, q: int, gen: torch.Generator) -> TaskBatch:
    """Hidden task: a goal g in [-1, 1]^2; the demonstrated action is g - obs[:2] (steer
    toward the goal). The context shows (obs, action) pairs, never g itself."""
    g = torch.empty(n, 1, 2).uniform_(-1, 1, generator=gen)

    def pts(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        obs = torch.randn(n, m, 3, generator=gen)
        return obs, g - obs[..., :2]

    o, a = pts(k)
    ctx = make_context(o, a, torch.zeros(n, k), torch.zeros(n, k, 3))
    qo, qa = pts(q)
    return TaskBatch(ctx, (qo, qa, torch.ones(n, q)))


def test_learns_to_infer_a_hidden_goal_from_context() -> None:
    """After 300 meta-iterations the emitted policy must beat the best context-free policy
    (a = E[g] - obs[:2] = -obs[:2], whose error is E|g|^2 = 2/3) by a wide margin on fresh
    tasks. An encoder that learned nothing gives a ratio >= 1."""
    cfg = HypernetConfig(
        obs_dim=3, act_dim=2, trunk=(16,), encoder=(32,), embed_dim=8, hyper_hidden=32
    )
    hyper = Hypernet(cfg)
    gen = torch.Generator().manual_seed(0)
    params, _ = fit(
        hyper.meta_grad, hyper.init(0), lambda: _goal_tasks(16, 8, 16, gen), 300, lr=1e-2
    )
    test = _goal_tasks(200, 8, 32, torch.Generator().manual_seed(99))
    with torch.no_grad():
        mse = float(hyper.meta_loss(params, test))
    obs, act, w = test.query
    context_free = float(((act + obs[..., :2]).square().sum(-1) * w).sum() / w.sum())
    assert mse < 0.25 * context_free, (mse, context_free)
    # bc_loss is the same quantity task by task.
    per_task = map_tasks(bc_loss, (0, 0))(hyper.adapt_tasks(params, test.support), test.query)
    assert torch.isclose(per_task.mean(), torch.tensor(mse), rtol=1e-4)


def test_world_recording_and_rollout_shapes() -> None:
    from avatar_meta.meta.hypernet import record_demos, rollout_returns
    from avatar_meta.tasks import make_task

    tasks = [make_task("reach_landmark", [1]).spec, make_task("follow_visitor", [2.0]).spec]
    demos = record_demos(tasks, steps=5, seed=0)
    size = contract.OBSERVATION_SIZE
    assert demos.obs.shape == (2, 5, size) and demos.action.shape == (2, 5, 2)
    assert demos.reward.shape == (2, 5) and demos.next_obs.shape == (2, 5, size)
    assert bool((demos.action.abs() <= 1).all())
    # The next obs of step t is the obs of step t + 1 (no episode ends in 5 steps).
    assert torch.equal(demos.next_obs[:, :-1], demos.obs[:, 1:])
    cfg = HypernetConfig()
    hyper = Hypernet(cfg)
    ctx = make_context(demos.obs, demos.action, demos.reward, demos.next_obs)
    policies = hyper.adapt_tasks(hyper.init(0), ctx)
    returns = rollout_returns(policies, tasks, seed=0)
    assert returns.shape == (2,)
    again = rollout_returns(policies, tasks, seed=0)
    assert (returns == again).all()
